#!/usr/bin/env node
// ESME driver on top of npm smpp@0.5.1 (farhadi/node-smpp). CLI and events: tests/peers/README.md.
//   NODE_PATH=~/.cache/smsc-operator/node/node_modules node tests/peers/esme_node.js --port 2775 ...
'use strict';

const smpp = require('smpp');

const EXIT = { OK: 0, TIMEOUT: 1, BIND_FAILED: 2, ERROR: 3, SUBMIT_REJECTED: 4, USAGE: 64 };
const DEBUG = process.env.SMPP_PEER_DEBUG === '1';
function debug(...a) { if (DEBUG) console.error('[esme_node]', ...a); }
function emit(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields || {})) + '\n');
}
function usage(msg) { console.error(msg); process.exit(EXIT.USAGE); }

function parseArgs(argv) {
  const o = { host: '127.0.0.1', port: null, systemId: null, password: '', systemType: '',
              bindType: 'trx', submit: 0, text: 'hello', dataCoding: 0, registeredDelivery: 0,
              waitReceipts: 0, waitMo: 0, enquireLink: false, timeout: 10,
              sourceAddr: '12345', destAddr: '31600000000', window: 10 };
  const intArg = (v, k) => { const n = Number(v); if (!Number.isFinite(n)) usage('bad value for ' + k); return n; };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i];
    if (k === '--enquire-link') { o.enquireLink = true; continue; }
    if (k === '-h' || k === '--help') { console.log('see tests/peers/README.md'); process.exit(0); }
    const v = argv[++i];
    if (v === undefined) usage('missing value for ' + k);
    switch (k) {
      case '--host': o.host = v; break;
      case '--port': o.port = intArg(v, k); break;
      case '--system-id': o.systemId = v; break;
      case '--password': o.password = v; break;
      case '--system-type': o.systemType = v; break;
      case '--bind-type': o.bindType = v; break;
      case '--submit': o.submit = intArg(v, k); break;
      case '--text': o.text = v; break;
      case '--data-coding': o.dataCoding = intArg(v, k); break;
      case '--registered-delivery': o.registeredDelivery = intArg(v, k); break;
      case '--wait-receipts': o.waitReceipts = intArg(v, k); break;
      case '--wait-mo': o.waitMo = intArg(v, k); break;
      case '--timeout': o.timeout = intArg(v, k); break;
      case '--source-addr': o.sourceAddr = v; break;
      case '--dest-addr': o.destAddr = v; break;
      case '--window': o.window = Math.max(1, intArg(v, k)); break;
      case '--validity': o.validity = v; break;
      case '--schedule': o.schedule = v; break;
      case '--ops': o.ops = v.split(',').filter((x) => x); break;
      default: usage('unknown argument ' + k);
    }
  }
  if (o.port === null || o.systemId === null) usage('--port and --system-id are required');
  if (!['tx', 'rx', 'trx'].includes(o.bindType)) usage('--bind-type must be tx|rx|trx');
  if (![0, 8].includes(o.dataCoding)) usage('--data-coding must be 0 or 8');
  if (![0, 1, 2].includes(o.registeredDelivery)) usage('--registered-delivery must be 0, 1 or 2');
  if (o.host !== '127.0.0.1' && !process.env.SMPP_PEER_ALLOW_REMOTE) usage('only 127.0.0.1 is allowed');
  if (o.submit > 0 && o.bindType === 'rx') usage('--submit needs a tx or trx bind');
  if ((o.waitReceipts || o.waitMo) && o.bindType === 'tx') usage('--wait-receipts/--wait-mo need an rx or trx bind');
  return o;
}

const o = parseArgs(process.argv);
const sentIds = [];
const st = { submitted: 0, acked: 0, rejected: 0, receipts: 0, mo: 0, pending: 0 };
let session = null;
let finished = false;
let bound = false;
let peerUnbound = false;
let unbinding = false;
let code = EXIT.OK;
let waiter = null;               // { check: () => bool, resolve }

function wake() { if (waiter && waiter.check()) { const w = waiter; waiter = null; w.resolve(); } }
function waitFor(check) {
  return new Promise((resolve) => { waiter = { check, resolve }; wake(); });
}

function finish(exitCode) {
  if (finished) return;
  finished = true;
  emit('summary', { submitted: st.submitted, acked: st.acked, rejected: st.rejected,
                    receipts: st.receipts, mo: st.mo });
  if (session) { try { session.destroy(); } catch (e) { /* ignore */ } }
  // Let stdout drain before exiting.
  process.stdout.write('', () => process.exit(exitCode));
}

const overall = setTimeout(async () => {
  emit('timeout', { submitted: st.submitted, pending: st.pending, receipts: st.receipts, mo: st.mo });
  code = EXIT.TIMEOUT;
  if (bound && !peerUnbound) await unbind(2000);
  finish(code);
}, o.timeout * 1000);

function decodeText(pdu) {
  const sm = pdu.short_message;
  if (sm == null) return '';
  if (Buffer.isBuffer(sm)) return pdu.data_coding === 8 ? swap16(sm).toString('utf16le') : sm.toString('latin1');
  if (typeof sm === 'string') return sm;
  const m = sm.message;
  if (Buffer.isBuffer(m)) return pdu.data_coding === 8 ? swap16(m).toString('utf16le') : m.toString('latin1');
  return m == null ? '' : String(m);
}
function swap16(b) { const c = Buffer.from(b); if (c.length % 2 === 0) c.swap16(); return c; }

function field(text, re) { const m = re.exec(text); return m ? m[1] : null; }

function onDeliver(pdu) {
  session.send(pdu.response());
  const esm = pdu.esm_class || 0;
  const text = decodeText(pdu);
  const ev = { receipt: (esm & 0x04) !== 0, esm_class: esm, data_coding: pdu.data_coding || 0,
               source_addr: pdu.source_addr, dest_addr: pdu.destination_addr, text };
  if (ev.receipt) {
    Object.assign(ev, {
      receipted_message_id: pdu.receipted_message_id === undefined ? null : pdu.receipted_message_id,
      message_state: pdu.message_state === undefined ? null : pdu.message_state,
      id: field(text, /(?:^|\s)id:(\S*)/i),
      stat: field(text, /(?:^|\s)stat:(\S*)/i),
      err: field(text, /(?:^|\s)err:(\S*)/i),
      sub: field(text, /(?:^|\s)sub:(\S*)/i),
      dlvrd: field(text, /(?:^|\s)dlvrd:(\S*)/i),
      submit_date: field(text, /(?:^|\s)submit date:(\S*)/i),
      done_date: field(text, /(?:^|\s)done date:(\S*)/i),
    });
    st.receipts++;
  } else {
    st.mo++;
  }
  emit('deliver', ev);
  wake();
}

function unbind(ms) {
  unbinding = true;
  return new Promise((resolve) => {
    let done = false;
    const t = setTimeout(() => { if (!done) { done = true; emit('unbound', { resp: false }); resolve(); } }, ms);
    const sent = session.unbind((resp) => {
      if (done) return;
      done = true; clearTimeout(t);
      emit('unbound', { resp: true, status: resp.command_status });
      resolve();
    });
    if (!sent) { done = true; clearTimeout(t); emit('unbound', { resp: false }); resolve(); return; }
    session.once('close', () => {
      if (done) return;
      done = true; clearTimeout(t);
      emit('unbound', { resp: false });
      resolve();
    });
  });
}

function bindPdu() {
  return new Promise((resolve) => {
    const cmd = { tx: 'bind_transmitter', rx: 'bind_receiver', trx: 'bind_transceiver' }[o.bindType];
    session[cmd]({ system_id: o.systemId, password: o.password, system_type: o.systemType },
                 (pdu) => resolve(pdu.command_status));
  });
}

async function run() {
  session = smpp.connect({ host: o.host, port: o.port });
  session.on('error', (e) => {
    if (finished) return;
    emit('error', { error: String(e && e.message || e) });
    finish(EXIT.ERROR);
  });
  session.on('close', () => {
    if (finished) return;
    if (unbinding) return;
    emit('error', { error: peerUnbound ? 'peer unbound before all deliveries' : 'connection closed by peer' });
    finish(code || EXIT.ERROR);
  });
  session.on('pdu', (pdu) => debug('<<', pdu.command, 'seq', pdu.sequence_number, 'status', pdu.command_status));
  session.on('deliver_sm', onDeliver);
  session.on('enquire_link', (pdu) => { session.send(pdu.response()); emit('enquire_link_received'); });
  session.on('unbind', (pdu) => {
    peerUnbound = true;
    emit('unbind_received');
    session.send(pdu.response());
    wake();
  });
  await new Promise((resolve) => session.once('connect', resolve));
  debug('connected');

  const status = await bindPdu();
  if (status !== 0) {
    emit('bind_failed', { status });
    finish(EXIT.BIND_FAILED);
    return;
  }
  bound = true;
  emit('bound', { bind_type: o.bindType });

  if (o.enquireLink) {
    await new Promise((resolve) => session.enquire_link((pdu) => resolve(pdu)));
    emit('enquire_link_resp');
  }

  const body = o.dataCoding === 8 ? swap16(Buffer.from(o.text, 'utf16le')) : Buffer.from(o.text, 'latin1');
  await new Promise((resolve) => {
    const pump = () => {
      while (st.submitted < o.submit && st.pending < o.window) {
        const idx = ++st.submitted;
        st.pending++;
        const pdu = new smpp.PDU('submit_sm', {
          source_addr: o.sourceAddr, destination_addr: o.destAddr, short_message: body,
          data_coding: o.dataCoding, registered_delivery: o.registeredDelivery,
        });
        if (o.validity) pdu.validity_period = o.validity;
        if (o.schedule) pdu.schedule_delivery_time = o.schedule;
        session.send(pdu, (resp) => {
          st.pending--;
          if (resp.command_status === 0) st.acked++; else st.rejected++;
          emit('submit_resp', { sequence: idx, pdu_sequence: resp.sequence_number, status: resp.command_status,
                                message_id: resp.command_status === 0 ? resp.message_id : null });
          if (resp.command_status === 0) sentIds.push(resp.message_id);
          pump();
        });
      }
      if (st.submitted >= o.submit && st.pending === 0) resolve();
    };
    pump();
  });

  await runOps();
  await waitFor(() => peerUnbound || (st.receipts >= o.waitReceipts && st.mo >= o.waitMo));
  if (peerUnbound) {
    emit('error', { error: 'peer unbound before all deliveries' });
    finish(EXIT.ERROR);
    return;
  }
  await unbind(Math.max(2000, o.timeout * 1000));
  clearTimeout(overall);
  finish(st.rejected ? EXIT.SUBMIT_REJECTED : EXIT.OK);
}

// --ops a,b,...: after the submits, one PDU each, in order, on the first submit's id (`ids[0]`);
// each emits an `op` event with its command_status and the fields of its response.
async function runOps() {
  const ids = [];
  for (const e of sentIds) ids.push(e);
  const call = (command, fields) => new Promise((resolve) => session.send(new smpp.PDU(command, fields), resolve));
  for (const op of o.ops || []) {
    let resp;
    if (op === 'query') resp = await call('query_sm', { message_id: ids[0], source_addr: o.sourceAddr });
    else if (op === 'query_unknown') resp = await call('query_sm', { message_id: 'nope', source_addr: o.sourceAddr });
    else if (op === 'cancel') resp = await call('cancel_sm', { message_id: ids[0], source_addr: o.sourceAddr, destination_addr: o.destAddr });
    else if (op === 'cancel_unknown') resp = await call('cancel_sm', { message_id: 'nope', source_addr: o.sourceAddr, destination_addr: o.destAddr });
    else if (op === 'replace') resp = await call('replace_sm', { message_id: ids[0], source_addr: o.sourceAddr, short_message: 'replaced' });
    else if (op === 'replace_bad_validity') resp = await call('replace_sm', { message_id: ids[0], source_addr: o.sourceAddr, validity_period: '991399999999000+', short_message: 'x' });
    else if (op === 'multi') resp = await call('submit_multi', { source_addr: o.sourceAddr, short_message: 'fan',
      dest_address: [{ dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: o.destAddr }, { dest_addr_ton: 1, dest_addr_npi: 1, destination_addr: o.destAddr + '1' }] });
    else if (op === 'multi_dl') resp = await call('submit_multi', { source_addr: o.sourceAddr, short_message: 'fan',
      dest_address: [{ destination_addr: o.destAddr }, { dl_name: 'friends' }] });
    else if (op === 'data_sm') resp = await call('data_sm', { source_addr: o.sourceAddr, destination_addr: o.destAddr, message_payload: 'payload' });
    else { emit('error', { error: 'unknown op ' + op }); continue; }
    emit('op', { op, status: resp.command_status, message_id: resp.message_id === undefined ? null : resp.message_id,
                 message_state: resp.message_state === undefined ? null : resp.message_state,
                 final_date: resp.final_date === undefined ? null : String(resp.final_date),
                 unsuccess: (resp.unsuccess_sme || []).map((u) => ({ addr: u.destination_addr, status: u.error_status_code })) });
  }
}

run().catch((e) => { emit('error', { error: String(e && e.stack || e) }); finish(EXIT.ERROR); });
