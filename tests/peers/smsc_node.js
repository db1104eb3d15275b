#!/usr/bin/env node
// SMSC (server) peer on top of npm smpp@0.5.1 (farhadi/node-smpp), createServer().
// CLI and JSON events: tests/peers/README.md.
//   NODE_PATH=~/.cache/smsc-operator/node/node_modules node tests/peers/smsc_node.js --port 0 \
//     --system-id esme --password secret --receipt-delay-ms 100
'use strict';

const smpp = require('smpp');
const crypto = require('crypto');

const DEBUG = process.env.SMPP_PEER_DEBUG === '1';
function debug(...a) { if (DEBUG) console.error('[smsc_node]', ...a); }
function emit(event, fields) {
  process.stdout.write(JSON.stringify(Object.assign({ event }, fields || {})) + '\n');
}

function parseArgs(argv) {
  const o = { port: 0, systemId: null, password: null, receiptDelayMs: 0,
              receiptStat: 'DELIVRD', smscSystemId: 'smsc_node', host: '127.0.0.1' };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    switch (k) {
      case '--port': o.port = parseInt(v, 10); i++; break;
      case '--host': o.host = v; i++; break;
      case '--system-id': o.systemId = v; i++; break;
      case '--password': o.password = v; i++; break;
      case '--receipt-delay-ms': o.receiptDelayMs = parseInt(v, 10); i++; break;
      case '--receipt-stat': o.receiptStat = v; i++; break;
      case '--smsc-system-id': o.smscSystemId = v; i++; break;
      case '-h': case '--help':
        console.log('usage: smsc_node.js --port P [--system-id S] [--password W] ' +
          '[--receipt-delay-ms D] [--receipt-stat DELIVRD|UNDELIV|...] [--smsc-system-id ID]');
        process.exit(0);
      default:
        console.error('unknown argument ' + k); process.exit(64);
    }
  }
  if (o.host !== '127.0.0.1') { console.error('only 127.0.0.1 is allowed'); process.exit(64); }
  return o;
}

const opts = parseArgs(process.argv);
const STATES = { ENROUTE: 1, DELIVRD: 2, EXPIRED: 3, DELETED: 4, UNDELIV: 5, ACCEPTD: 6, UNKNOWN: 7, REJECTD: 8 };
const BIND_TYPES = { bind_transmitter: 'tx', bind_receiver: 'rx', bind_transceiver: 'trx' };
const sessions = new Set();
let nextSession = 1;
let msgCounter = 0;

function newMessageId() {
  // 16 lowercase hex chars: 8 random bytes, with a counter folded in so ids never repeat in a run.
  msgCounter++;
  const b = crypto.randomBytes(8);
  b.writeUInt16BE(msgCounter & 0xffff, 6);
  return b.toString('hex');
}

function yymmddhhmm(d) {
  const p = (n) => String(n).padStart(2, '0');
  return p(d.getUTCFullYear() % 100) + p(d.getUTCMonth() + 1) + p(d.getUTCDate()) +
    p(d.getUTCHours()) + p(d.getUTCMinutes());
}

function wantsReceipt(rd, stat) {
  rd &= 0x03;
  if (rd === 1) return true;
  if (rd === 2) return stat.toUpperCase() !== 'DELIVRD';
  return false;
}

function messageText(pdu) {
  const sm = pdu.short_message;
  if (sm == null) return '';
  if (Buffer.isBuffer(sm)) return sm.toString('latin1');
  if (typeof sm === 'string') return sm;
  if (sm.message != null) return Buffer.isBuffer(sm.message) ? sm.message.toString('latin1') : String(sm.message);
  return '';
}

function sendReceipt(origin, submit, messageId, submitDate) {
  // Deliver on the submitting session if it can receive, else on any receiving session of the same system_id.
  let target = null;
  if (origin.bound && origin.bindType !== 'tx' && !origin.closed) target = origin;
  else {
    for (const s of sessions) {
      if (s.bound && s.bindType !== 'tx' && !s.closed && s.systemId === origin.systemId) { target = s; break; }
    }
  }
  if (!target) {
    emit('receipt_skipped', { message_id: messageId, reason: 'no receiver/transceiver session' });
    return;
  }
  const stat = opts.receiptStat.toUpperCase();
  const delivered = stat === 'DELIVRD';
  const text = 'id:' + messageId + ' sub:001 dlvrd:' + (delivered ? '001' : '000') +
    ' submit date:' + yymmddhhmm(submitDate) + ' done date:' + yymmddhhmm(new Date()) +
    ' stat:' + stat + ' err:' + (delivered ? '000' : '001') + ' text:' + messageText(submit).slice(0, 20).replace(/[^\x20-\x7e]/g, '?');
  const deliver = {
    source_addr: submit.destination_addr,
    source_addr_ton: submit.dest_addr_ton,
    source_addr_npi: submit.dest_addr_npi,
    destination_addr: submit.source_addr,
    dest_addr_ton: submit.source_addr_ton,
    dest_addr_npi: submit.source_addr_npi,
    esm_class: 0x04,
    data_coding: 0,
    short_message: Buffer.from(text, 'latin1'),
    receipted_message_id: messageId,
    message_state: STATES[stat] || 7,
  };
  const ok = target.session.deliver_sm(deliver, (resp) => {
    emit('receipt_sent', { message_id: messageId, session: target.id, status: resp.command_status });
  });
  if (!ok) emit('receipt_skipped', { message_id: messageId, reason: 'socket not writable' });
}

const server = smpp.createServer((session) => {
  const st = { id: nextSession++, session, bound: false, bindType: null, systemId: null, closed: false };
  sessions.add(st);
  debug('session', st.id, 'connected');

  function onBind(pdu) {
    const bt = BIND_TYPES[pdu.command];
    if (st.bound) {
      session.send(pdu.response({ command_status: smpp.ESME_RALYBND }));
      return;
    }
    let status = 0;
    if (opts.systemId !== null && pdu.system_id !== opts.systemId) status = smpp.ESME_RINVSYSID;
    else if (opts.password !== null && pdu.password !== opts.password) status = smpp.ESME_RINVPASWD;
    if (status) {
      emit('bind_rejected', { bind_type: bt, system_id: pdu.system_id, status });
      session.send(pdu.response({ command_status: status }), () => session.close());
      return;
    }
    st.bound = true; st.bindType = bt; st.systemId = pdu.system_id;
    session.send(pdu.response({ system_id: opts.smscSystemId }));
    emit('bind', { bind_type: bt, system_id: pdu.system_id, session: st.id });
  }
  session.on('bind_transmitter', onBind);
  session.on('bind_receiver', onBind);
  session.on('bind_transceiver', onBind);

  session.on('submit_sm', (pdu) => {
    if (!st.bound || st.bindType === 'rx') {
      session.send(pdu.response({ command_status: smpp.ESME_RINVBNDSTS }));
      return;
    }
    const messageId = newMessageId();
    const submitDate = new Date();
    session.send(pdu.response({ message_id: messageId }));
    emit('submit', {
      message_id: messageId, registered_delivery: pdu.registered_delivery, session: st.id,
      source_addr: pdu.source_addr, dest_addr: pdu.destination_addr,
      data_coding: pdu.data_coding, esm_class: pdu.esm_class, text: messageText(pdu),
    });
    if (wantsReceipt(pdu.registered_delivery, opts.receiptStat)) {
      setTimeout(() => sendReceipt(st, pdu, messageId, submitDate), opts.receiptDelayMs);
    }
  });

  session.on('enquire_link', (pdu) => {
    session.send(pdu.response());
    emit('enquire_link', { session: st.id });
  });

  session.on('unbind', (pdu) => {
    st.bound = false;
    emit('unbind', { session: st.id });
    session.send(pdu.response(), () => session.close());
  });

  session.on('unknown', (pdu) => { session.send(pdu.response()); });
  session.on('pdu', (pdu) => debug('session', st.id, '<<', pdu.command, 'seq', pdu.sequence_number));
  session.on('error', (e) => debug('session', st.id, 'error', e && e.message));
  session.on('close', () => {
    st.closed = true;
    sessions.delete(st);
    if (st.bound) emit('disconnect', { session: st.id });
    debug('session', st.id, 'closed');
  });
});

// Control channel: one JSON command per stdin line.
//   {"cmd":"deliver","source_addr":"31600000000","dest_addr":"12345","text":"hi",
//    "data_coding":0|8,"system_id":"esme"}     -> MO deliver_sm (esm_class 0) to the first
//   bound rx/trx session (of that system_id if given); emits mo_sent / mo_failed.
function handleCommand(line) {
  let c;
  try { c = JSON.parse(line); } catch (e) { emit('command_error', { error: 'bad JSON' }); return; }
  if (c.cmd !== 'deliver') { emit('command_error', { error: 'unknown cmd ' + c.cmd }); return; }
  let target = null;
  for (const s of sessions) {
    if (s.bound && s.bindType !== 'tx' && !s.closed && (!c.system_id || s.systemId === c.system_id)) { target = s; break; }
  }
  if (!target) { emit('mo_failed', { reason: 'no receiver/transceiver session' }); return; }
  const dc = c.data_coding === 8 ? 8 : 0;
  const text = c.text == null ? 'hello' : String(c.text);
  const body = dc === 8 ? Buffer.from(text, 'utf16le').swap16() : Buffer.from(text, 'latin1');
  target.session.deliver_sm({
    source_addr: c.source_addr || '31600000000', destination_addr: c.dest_addr || '12345',
    esm_class: 0, data_coding: dc, short_message: body,
  }, (resp) => emit('mo_sent', { session: target.id, status: resp.command_status }));
}
let stdinBuf = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => {
  stdinBuf += d;
  let i;
  while ((i = stdinBuf.indexOf('\n')) >= 0) {
    const line = stdinBuf.slice(0, i).trim();
    stdinBuf = stdinBuf.slice(i + 1);
    if (line) handleCommand(line);
  }
});
process.stdin.on('error', () => {});

server.on('error', (e) => { console.error('server error: ' + e.message); process.exit(1); });
server.listen(opts.port, opts.host, () => {
  emit('listening', { port: server.address().port });
});

function shutdown() {
  for (const s of sessions) { try { s.session.destroy(); } catch (e) { /* ignore */ } }
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
