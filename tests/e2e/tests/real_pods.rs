//! The real-Pods tier: the user's story on the test bed's real node (tools/realnode.sh), with the
//! images `tools/images.sh` built from `deploy/Dockerfile.*`.
//!
//! In a namespace that enforces PodSecurity `restricted`: `helm install` of the chart runs the
//! operator image in-cluster under its own ServiceAccount; the operator runs two smscd Pods of an
//! SmscCluster whose DLR store is a Redis Pod and whose carrier is an smscd `sim` Pod; an ESME
//! outside the cluster (Python smpplib, `tests/peers/esme_soak.py`) reaches the SmscCluster
//! through its NodePort on 127.0.0.1 (kube-proxy) and must get a receipt for every acknowledged
//! submit while the test edits the routing (hot reload through the ConfigMap projection), deletes
//! a Pod under traffic, and rolls the image. Then an active/standby cluster (an upstream with
//! `maxBinds: 1`) loses its active Pod to a forced delete: the Lease, the role label and the
//! Service endpoints move, the carrier never sees two binds, and receipts keep flowing.
//!
//! Needs the real node: `make test` (tools/test.sh) starts it. With `SMSC_REAL_NODE=0` the tier
//! says it is skipped, loudly; anywhere else a missing real node is a failure.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use serde_json::Value;
use smsc_e2e::smsc::{http_get, metric_sum, BindWatch, WorkDir};
use smsc_e2e::{cache_dir, control_plane, fixture, repo_root, wait_for, ControlPlane};

const NODE: &str = "smsc-real-node";
const ESME_ID: &str = "esme";
const ESME_PASSWORD: &str = "esme-pw";
const CARRIER_PASSWORD: &str = "carr-pw";
const SMSCD_IMAGE: &str = "localhost/smscd:dev";
const SMSCD_IMAGE_B: &str = "localhost/smscd:dev-b";

/// What every Pod of this tier carries to land on the real node (tainted so that the kwok tests'
/// Pods never do).
const PLACEMENT: &str = r#"nodeSelector: {"smsc.io/real-node": "true"}
tolerations: [{key: smsc.io/real-node, operator: Exists, effect: NoSchedule}]"#;

struct Tier<'a> {
    cp: &'a ControlPlane,
    ns: String,
    dir: WorkDir,
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}

impl Tier<'_> {
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        Ok(self.cp.run(self.cp.kubectl()?.args(["-n", &self.ns]).args(args))?)
    }

    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        let out = self.kubectl(&a)?;
        serde_json::from_str(&out).with_context(|| format!("kubectl {args:?}: not JSON"))
    }

    fn apply(&self, name: &str, yaml: &str) -> anyhow::Result<()> {
        let file = self.dir.write(&format!("{name}.yaml"), yaml)?;
        let path = file.to_str().context("path")?;
        self.kubectl(&["apply", "-f", path])?;
        Ok(())
    }

    /// Point SmscCluster `cluster` at `image` (the operator rolls its Pods).
    fn set_image(&self, cluster: &str, image: &str) -> anyhow::Result<String> {
        self.kubectl(&[
            "patch",
            "smsc",
            cluster,
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"image":"{image}"}}}}"#),
        ])
    }

    /// Until exactly `n` Pods of `selector` exist and all are Ready on `image`.
    async fn wait_rolled(&self, what: &str, selector: &str, image: &str, n: usize) -> anyhow::Result<()> {
        wait_for(what, Duration::from_secs(180), || async {
            let all = self.pods(selector)?;
            let new = ready_of(&all).iter().filter(|p| p["spec"]["containers"][0]["image"] == image).count();
            Ok::<_, anyhow::Error>((new == n && all.len() == n).then_some(()))
        })
        .await?;
        Ok(())
    }

    fn pods(&self, selector: &str) -> anyhow::Result<Vec<Value>> {
        let v = self.json(&["get", "pods", "-l", selector])?;
        Ok(v["items"].as_array().cloned().unwrap_or_default())
    }

    /// Running, Ready, not terminating Pods of `selector`.
    fn ready_pods(&self, selector: &str) -> anyhow::Result<Vec<Value>> {
        Ok(ready_of(&self.pods(selector)?))
    }

    async fn wait_ready(&self, selector: &str, n: usize, timeout: Duration) -> anyhow::Result<Vec<Value>> {
        let ready = wait_for(&format!("{n} Ready Pods {selector}"), timeout, || async {
            let all = self.pods(selector)?;
            let pods = ready_of(&all);
            Ok::<_, anyhow::Error>((pods.len() == n && all.len() == n).then_some(pods))
        })
        .await;
        // On a timeout, say what the Pods were doing and what their containers said.
        ready.map_err(|e| {
            let pods = self.kubectl(&["get", "pods", "-o", "wide", "-l", selector]).unwrap_or_default();
            let logs = self
                .kubectl(&["logs", "-l", selector, "--tail", "5", "--all-containers", "--prefix"])
                .unwrap_or_default();
            let events = self.kubectl(&["get", "events", "--sort-by", ".lastTimestamp"]).unwrap_or_default();
            let events: Vec<&str> = events.lines().rev().take(10).collect();
            anyhow::anyhow!("{e}\n{pods}\nlogs:\n{logs}\nlast events:\n{}", events.join("\n"))
        })
    }

    fn cluster_ip(&self, service: &str) -> anyhow::Result<String> {
        let v = self.json(&["get", "service", service])?;
        v["spec"]["clusterIP"].as_str().map(String::from).context("clusterIP")
    }

    fn node_port(&self, service: &str, port_name: &str) -> anyhow::Result<u16> {
        let v = self.json(&["get", "service", service])?;
        let ports = v["spec"]["ports"].as_array().cloned().unwrap_or_default();
        let p = ports
            .iter()
            .find(|p| p["name"] == port_name || ports.len() == 1)
            .and_then(|p| p["nodePort"].as_u64())
            .with_context(|| format!("service {service} has no nodePort {port_name}: {ports:?}"))?;
        Ok(u16::try_from(p)?)
    }

    fn logs(&self, pod: &str) -> anyhow::Result<String> {
        self.kubectl(&["logs", pod, "--tail", "-1"])
    }

    /// Redis from Debian's redis-server (image built here), as the shared DLR store.
    fn redis(&self) -> anyhow::Result<()> {
        let yaml = std::fs::read_to_string(fixture("real-pods/redis.yaml")).context("fixture redis.yaml")?;
        self.apply("redis", &yaml)
    }

    /// A carrier played by smscd's simulator in its own Pod (fixtures/real-pods/carrier.yaml),
    /// accepting `accounts` (system_id, max_binds).
    fn carrier(&self, name: &str, accounts: &[(&str, u32)]) -> anyhow::Result<()> {
        let list: Vec<String> = accounts
            .iter()
            .map(|(id, max)| format!("{{ system_id: {id}, password: {CARRIER_PASSWORD}, max_binds: {max} }}"))
            .collect();
        let yaml = std::fs::read_to_string(fixture("real-pods/carrier.yaml"))
            .context("fixture carrier.yaml")?
            .replace("${NAME}", name)
            .replace("${ACCOUNTS}", &format!("[{}]", list.join(", ")))
            .replace("${IMAGE}", SMSCD_IMAGE);
        self.apply(name, &yaml)
    }

    /// An SmscCluster on the real node: NodePort Service, short shutdown timings.
    fn smsc_cluster(
        &self,
        name: &str,
        replicas: u32,
        topology: &str,
        carrier_id: &str,
        max_binds: u32,
        redis_url: &str,
    ) -> anyhow::Result<()> {
        self.apply(
            name,
            &format!(
                r#"apiVersion: v1
kind: Secret
metadata: {{name: {name}-esme}}
stringData: {{password: {ESME_PASSWORD}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-carrier}}
stringData: {{systemId: {carrier_id}, password: {CARRIER_PASSWORD}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: {name}-redis}}
stringData: {{url: "{redis_url}"}}
---
apiVersion: smsc.io/v1alpha1
kind: SmscCluster
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  topology: {topology}
  image: {SMSCD_IMAGE}
  smpp:
    accounts:
      - {{systemId: {ESME_ID}, passwordSecretRef: {{name: {name}-esme, key: password}}, maxMsgPerSec: 200}}
  upstreams:
    - name: carrier
      host: "{carrier_ip}"
      port: 2775
      credentialsSecretRef: {{name: {name}-carrier}}
      bindsPerReplica: 1
      maxBinds: {max_binds}
  routing: {{defaultChain: [carrier]}}
  dlrStore:
    type: Redis
    redis: {{urlSecretRef: {{name: {name}-redis, key: url}}}}
  service: {{type: NodePort, externalTrafficPolicy: Cluster}}
  scaleOutChecklist: {{loadBalancerPinsConnections: true, esmesReconnectWithBackoff: true}}
  shutdown: {{preStopSleepSeconds: 2, drainSeconds: 10}}
  leaderElection: {{leaseDurationSeconds: 6, renewDeadlineSeconds: 4, retryPeriodSeconds: 1}}
  pod:
{placement}
"#,
                carrier_ip = self.cluster_ip("carrier")?,
                placement = indent(PLACEMENT, 4),
            ),
        )
    }

    fn esme(&self, name: &str, port: u16, submit: u32, rate: u32, timeout_secs: u32) -> anyhow::Result<Esme> {
        let python = cache_dir().join("venv/bin/python");
        let out = self.dir.path().join(format!("{name}.jsonl"));
        let stop = self.dir.path().join(format!("{name}.stop"));
        let child = Command::new(&python)
            .arg(repo_root().join("tests/peers/esme_soak.py"))
            .args(["--port", &port.to_string(), "--system-id", ESME_ID, "--password", ESME_PASSWORD])
            .args(["--submit", &submit.to_string(), "--rate", &rate.to_string()])
            .args(["--timeout", &timeout_secs.to_string()])
            .arg("--stop-file")
            .arg(&stop)
            .stdout(std::fs::File::create(&out).context("ESME output file")?)
            .stderr(
                std::fs::File::create(self.dir.path().join(format!("{name}.err"))).context("ESME stderr")?,
            )
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (tools/deps.sh python)", python.display()))?;
        Ok(Esme { child, out, stop, name: name.into() })
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The Running, Ready, not terminating ones of `pods`.
fn ready_of(pods: &[Value]) -> Vec<Value> {
    pods.iter().filter(|p| is_ready(p) && p["metadata"]["deletionTimestamp"].is_null()).cloned().collect()
}

fn name_of(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or_default().to_string()
}

/// The ESME child process and its JSON event lines.
struct Esme {
    child: Child,
    out: PathBuf,
    stop: PathBuf,
    name: String,
}

impl Esme {
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn count(&self, event: &str) -> usize {
        self.events().iter().filter(|e| e["event"] == event).count()
    }

    async fn wait_event(&self, event: &str, n: usize, timeout: Duration) -> anyhow::Result<()> {
        wait_for(&format!("{} event {event} x{n}", self.name), timeout, || async {
            Ok::<_, anyhow::Error>((self.count(event) >= n).then_some(()))
        })
        .await?;
        Ok(())
    }

    fn stop_sending(&self) -> anyhow::Result<()> {
        std::fs::write(&self.stop, b"stop").context("writing the stop file")
    }

    /// Waits for the ESME to finish (it is bounded by its own --timeout) and returns its summary.
    async fn summary(mut self, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait()? {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                bail!("{} did not finish within {timeout:?}: {:?}", self.name, self.events());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let events = self.events();
        let summary = events.iter().rev().find(|e| e["event"] == "summary").cloned().with_context(|| {
            format!(
                "{} printed no summary (exit {status}): {}",
                self.name,
                std::fs::read_to_string(self.out.with_extension("err")).unwrap_or_default()
            )
        })?;
        eprintln!("[real-pods] {}: {summary}", self.name);
        Ok(summary)
    }
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

/// Every acknowledged submit got exactly one receipt, its own, DELIVRD.
fn assert_every_receipt(summary: &Value, min_acked: u64) -> anyhow::Result<()> {
    let acked = num(summary, "acked");
    ensure!(acked >= min_acked, "only {acked} submits acknowledged (want >= {min_acked}): {summary}");
    ensure!(num(summary, "missing_count") == 0, "acknowledged submits without a receipt: {summary}");
    ensure!(num(summary, "unknown_receipts") == 0, "receipts for ids we never got: {summary}");
    ensure!(num(summary, "receipts") == acked, "receipts != acknowledged submits: {summary}");
    ensure!(summary["stats"]["DELIVRD"].as_u64() == Some(acked), "every receipt DELIVRD: {summary}");
    Ok(())
}

/// `helm uninstall` when the test ends, however it ends (the operator watches only the test's
/// namespace, but it must not outlive the test).
struct Release<'a> {
    cp: &'a ControlPlane,
    name: String,
    ns: String,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if std::env::var_os("SMSC_E2E_KEEP_NAMESPACES").is_some() {
            return;
        }
        if let Ok(mut helm) = self.cp.helm() {
            let _ = self.cp.run(helm.args([
                "uninstall",
                &self.name,
                "-n",
                &self.ns,
                "--wait",
                "--timeout",
                "60s",
            ]));
        }
    }
}

/// Is the real node there? `Ok(false)` only when the run said SMSC_REAL_NODE=0.
fn real_node_present(cp: &ControlPlane) -> anyhow::Result<bool> {
    if std::env::var("SMSC_REAL_NODE").is_ok_and(|v| v == "0") {
        eprintln!("[real-pods] SKIPPED: SMSC_REAL_NODE=0, this run has no real node; the real-Pods tier did not run");
        return Ok(false);
    }
    let out = cp.run(cp.kubectl()?.args(["get", "node", NODE, "-o", "json"]));
    let node: Value = match out {
        Ok(text) => serde_json::from_str(&text)?,
        Err(e) => bail!("no real node {NODE} in this cluster ({e}); run the tier through `make test` or `make cluster-up`, or set SMSC_REAL_NODE=0 to skip it"),
    };
    let ready = node["status"]["conditions"]
        .as_array()
        .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    ensure!(ready, "the real node {NODE} is not Ready: {}", node["status"]["conditions"]);
    Ok(true)
}

fn elapsed(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

/// A namespace that enforces PodSecurity `restricted`, the operator installed in it from the
/// chart (watching only it), a Redis Pod and a carrier Pod accepting `accounts`. Returns the
/// release (uninstalled on drop) and the Redis URL.
async fn setup<'a>(
    cp: &'a ControlPlane,
    ns: &str,
    dir: &str,
    accounts: &[(&str, u32)],
) -> anyhow::Result<(Tier<'a>, Release<'a>, String)> {
    let t0 = Instant::now();
    let tier = Tier { cp, ns: ns.to_string(), dir: WorkDir::new(dir)? };
    cp.run(cp.kubectl()?.args([
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]))?;

    // The operator from its chart, in-cluster, with its own ServiceAccount.
    let release = Release { cp, name: "smsc-op".into(), ns: ns.to_string() };
    let values = tier.dir.write(
        "values.yaml",
        &format!(
            r#"image: {{repository: localhost/smsc-operator, tag: dev, pullPolicy: IfNotPresent}}
smscd: {{image: {{repository: localhost/smscd, tag: dev}}}}
watchNamespaces: [{ns}]
log: {{format: text, level: "info,smsc_operator=debug"}}
{PLACEMENT}
"#
        ),
    )?;
    cp.run(
        cp.helm()?
            .args(["install", &release.name, "-n", ns])
            .arg(repo_root().join("charts/smsc-operator"))
            .arg("-f")
            .arg(&values),
    )?;
    let op = tier.wait_ready("app.kubernetes.io/name=smsc-operator", 1, Duration::from_secs(120)).await?;
    let op_pod = &op[0];
    ensure!(
        op_pod["spec"]["nodeName"] == NODE,
        "the operator runs on the real node: {}",
        op_pod["spec"]["nodeName"]
    );
    let sa = op_pod["spec"]["serviceAccountName"].as_str().unwrap_or_default();
    ensure!(!sa.is_empty() && sa != "default", "the operator runs as its own ServiceAccount, not {sa:?}");
    let env = op_pod["spec"]["containers"][0]["env"].to_string();
    ensure!(!env.contains("KUBECONFIG"), "no kubeconfig handed in: {env}");
    eprintln!("[real-pods] operator Ready from the chart after {}", elapsed(t0));
    // The in-cluster operator keeps its CRD at its schema (crds.manage; crd.rs), through the
    // chart's by-name ClusterRole. (Other tests' operators share the CRD, so its own log says it.)
    let op_name = name_of(op_pod);
    wait_for("the operator to apply its CRD", Duration::from_secs(60), || async {
        let log = tier.logs(&op_name)?;
        ensure!(
            !log.contains("could not apply the SmscCluster CRD"),
            "the operator could not apply its CRD:\n{log}"
        );
        Ok::<_, anyhow::Error>(log.contains("SmscCluster CRD at this operator's schema").then_some(()))
    })
    .await?;

    tier.redis()?;
    tier.carrier("carrier", accounts)?;
    tier.wait_ready("app=redis", 1, Duration::from_secs(60)).await?;
    tier.wait_ready("app=carrier", 1, Duration::from_secs(60)).await?;
    let redis_url = format!("redis://{}:6379/0", tier.cluster_ip("redis")?);
    Ok((tier, release, redis_url))
}

#[tokio::test]
async fn real_pods_end_to_end() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    if !real_node_present(cp)? {
        return Ok(());
    }
    let t0 = Instant::now();
    let tns = cp.namespace("real-pods").await?;
    let (tier, release, redis_url) =
        setup(cp, tns.name(), "real-pods", &[("carrier-aa", 3), ("carrier-as", 1)]).await?;

    // 3. Active/active, two replicas, Redis receipts, at maxBinds 2: the two replicas' binds and
    //    no more, so every replacement below must wait for a bind permit (the carrier would take
    //    a third, which step 9 uses; until then its bind gauge must never pass 2).
    tier.smsc_cluster("smsc", 2, "ActiveActive", "carrier-aa", 2, &redis_url)?;
    let sel = "app.kubernetes.io/instance=smsc,app.kubernetes.io/name=smscd";
    let pods = tier.wait_ready(sel, 2, Duration::from_secs(120)).await?;
    for p in &pods {
        ensure!(p["spec"]["nodeName"] == NODE, "{} runs on the real node", name_of(p));
    }
    eprintln!(
        "[real-pods] smscd Pods Ready after {}\n{}",
        elapsed(t0),
        tier.kubectl(&["get", "pods", "-o", "wide"])?
    );
    let port = tier.node_port("smsc", "smpp")?;

    // 4. 100 submits through kube-proxy, 100 DELIVRD receipts with our ids.
    let s = tier.esme("esme-100", port, 100, 100, 60)?.summary(Duration::from_secs(90)).await?;
    assert_every_receipt(&s, 100)?;

    // 5. Routing edit -> ConfigMap projection -> hot reload, no restart, the bind kept.
    let uids: Vec<String> = pods.iter().map(|p| p["metadata"]["uid"].to_string()).collect();
    let reloads_before: Vec<usize> = pods
        .iter()
        .map(|p| tier.logs(&name_of(p)).map(|l| l.matches("config reloaded").count()))
        .collect::<Result<_, _>>()?;
    let esme = tier.esme("esme-reload", port, 2000, 5, 150)?;
    esme.wait_event("bound", 1, Duration::from_secs(30)).await?;
    let t_edit = Instant::now();
    tier.kubectl(&["patch", "smsc", "smsc", "--type", "json", "-p",
        r#"[{"op":"add","path":"/spec/routing/rules","value":[{"destinationPrefix":"999","chain":["sim"]}]},{"op":"replace","path":"/spec/smpp/accounts/0/maxMsgPerSec","value":300}]"#])?;
    for (p, before) in pods.iter().zip(&reloads_before) {
        let name = name_of(p);
        wait_for(&format!("{name} to reload its config"), Duration::from_secs(90), || async {
            Ok::<_, anyhow::Error>(
                (tier.logs(&name)?.matches("config reloaded").count() > *before).then_some(()),
            )
        })
        .await?;
    }
    eprintln!("[real-pods] routing edit applied by both Pods {} after the patch", elapsed(t_edit));
    esme.stop_sending()?;
    let s = esme.summary(Duration::from_secs(120)).await?;
    assert_every_receipt(&s, 1)?;
    ensure!(num(&s, "binds") == 1, "the ESME's bind survived the reload: {s}");
    let now = tier.pods(sel)?;
    let uids_now: Vec<String> = now.iter().map(|p| p["metadata"]["uid"].to_string()).collect();
    ensure!(
        uids_now.len() == 2 && uids.iter().all(|u| uids_now.contains(u)),
        "same Pods after the reload: {uids:?} -> {uids_now:?}"
    );
    for p in &now {
        ensure!(
            p["status"]["containerStatuses"][0]["restartCount"] == 0,
            "no restart: {}",
            p["status"]["containerStatuses"]
        );
    }

    // 5b. Scripted handlers (issue 15 item 5): an edited script reaches the running smscd with
    //     no restart.
    handlers_hot_reload(&tier).await?;

    // 6. Delete the replica that holds the ESME's bind, under traffic.
    //    From here to the end of 7b the carrier's count of carrier-aa binds is sampled: it must
    //    never pass maxBinds 2 (issue 13 item 15), though each replacement starts while its
    //    predecessor still drains with its bind.
    let admin = tier.node_port("carrier-admin", "admin")?;
    let watch_aa = BindWatch::for_account(admin, "carrier-aa", Duration::from_millis(200));
    let esme = tier.esme("esme-delete", port, 600, 30, 150)?;
    esme.wait_event("bound", 1, Duration::from_secs(30)).await?;
    let bound_on = wait_for("the Pod that holds the ESME's bind", Duration::from_secs(30), || async {
        for p in tier.ready_pods(sel)? {
            let name = name_of(&p);
            let logs = tier.logs(&name)?;
            if logs.lines().filter(|l| l.contains("ESME bound") && l.contains(ESME_ID)).count()
                > logs.lines().filter(|l| l.contains("ESME session ended")).count()
            {
                return Ok::<_, anyhow::Error>(Some(name));
            }
        }
        Ok(None)
    })
    .await?;
    let t_del = Instant::now();
    // The container's log, streamed until it exits: it must show smscd's drain starting once the
    // 2 s preStop sleep is over (SIGTERM comes after preStop), and a clean stop.
    let stream = tier.dir.path().join("deleted-pod.log");
    let mut follow = tier
        .cp
        .kubectl()?
        .args(["-n", &tier.ns, "logs", "-f", &bound_on])
        .stdout(std::fs::File::create(&stream).context("log stream file")?)
        .stderr(Stdio::null())
        .spawn()
        .context("kubectl logs -f")?;
    let deleted_at = utc_seconds_of_day(std::time::SystemTime::now());
    tier.kubectl(&["delete", "pod", &bound_on, "--wait=false"])?;
    let t_follow = Instant::now();
    while follow.try_wait()?.is_none() && t_follow.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = follow.kill();
    let log = std::fs::read_to_string(&stream).unwrap_or_default();
    let drain_line = log.lines().find(|l| l.contains("shutting down: draining")).with_context(|| {
        format!(
            "the deleted Pod's log shows no drain:\n{}",
            log.lines().rev().take(10).collect::<Vec<_>>().join("\n")
        )
    })?;
    let drain_at = log_line_seconds_of_day(drain_line).context("a timestamp on the drain line")?;
    let after = (drain_at - deleted_at).rem_euclid(86_400.0);
    ensure!(
        after >= 1.5,
        "smscd began draining {after:.2} s after the delete: the 2 s preStop sleep did not run first"
    );
    ensure!(log.contains("smscd stopped"), "smscd did not stop cleanly after its drain");
    eprintln!(
        "[real-pods] {bound_on}: preStop, then SIGTERM: smscd began draining {after:.2} s after the delete"
    );
    esme.wait_event("bound", 2, Duration::from_secs(60)).await?;
    eprintln!(
        "[real-pods] the ESME rebound through the Service {} after deleting {bound_on}",
        elapsed(t_del)
    );
    let s = esme.summary(Duration::from_secs(180)).await?;
    assert_every_receipt(&s, 100)?;
    tier.wait_ready(sel, 2, Duration::from_secs(120)).await?;

    // 7. A rolling update (image tag) under traffic: zero lost receipts.
    let esme = tier.esme("esme-rollout", port, 900, 30, 170)?;
    esme.wait_event("bound", 1, Duration::from_secs(30)).await?;
    let t_roll = Instant::now();
    // A surge Pod's bind would not fit in maxBinds: the operator rolls old-Pod-first.
    let strategy =
        tier.kubectl(&["get", "deployment", "smsc", "-o", "jsonpath={.spec.strategy.rollingUpdate}"])?;
    ensure!(
        strategy.contains(r#""maxSurge":0"#) && strategy.contains(r#""maxUnavailable":1"#),
        "the sample-like cluster rolls old-Pod-first: {strategy}"
    );
    tier.set_image("smsc", SMSCD_IMAGE_B)?;
    tier.wait_rolled("the rollout to the new image", sel, SMSCD_IMAGE_B, 2).await?;
    eprintln!("[real-pods] rolled to {SMSCD_IMAGE_B} in {}", elapsed(t_roll));
    let s = esme.summary(Duration::from_secs(180)).await?;
    assert_every_receipt(&s, 100)?;

    // 7b. Topology switches are staged (issue 13 item 5): ActiveActive -> ActiveStandby -> back,
    //     under traffic. The Service's selector is the same in both (the role label: static on
    //     ActiveActive Pods, the Lease holder's own in ActiveStandby), so at every sample it has a
    //     ready endpoint and each one takes binds: an ActiveActive Pod or the Lease holder.
    for to in ["ActiveStandby", "ActiveActive"] {
        let esme = tier.esme(&format!("esme-to-{to}"), port, 600, 20, 170)?;
        esme.wait_event("bound", 1, Duration::from_secs(30)).await?;
        let t_switch = Instant::now();
        tier.kubectl(&[
            "patch",
            "smsc",
            "smsc",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"topology":"{to}"}}}}"#),
        ])?;
        let mut samples = 0u32;
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let (endpoints, done) = switch_sample(&tier, sel, "smsc", to)?;
            samples += 1;
            ensure!(
                !endpoints.is_empty(),
                "switching to {to}: the Service had no ready endpoint after {}",
                elapsed(t_switch)
            );
            for (pod, takes_binds) in &endpoints {
                ensure!(
                    *takes_binds,
                    "switching to {to}: endpoint {pod} is a standby ({} in)",
                    elapsed(t_switch)
                );
            }
            if done {
                break;
            }
            ensure!(Instant::now() < deadline, "switching to {to}: not done after 240 s");
        }
        eprintln!("[real-pods] switched to {to} in {} ({samples} endpoint samples, each with a bind-taking endpoint)", elapsed(t_switch));
        let s = esme.summary(Duration::from_secs(180)).await?;
        assert_every_receipt(&s, 100)?;
    }
    let (max_aa, samples) = watch_aa.max();
    ensure!(samples > 10, "the carrier's bind gauge was sampled ({samples})");
    ensure!(max_aa <= 2.0, "the carrier saw {max_aa} binds of carrier-aa at once (maxBinds 2)");
    let refused = tier
        .logs("carrier")?
        .lines()
        .filter(|l| l.contains("bind refused") && l.contains("carrier-aa"))
        .count();
    ensure!(refused == 0, "the carrier refused {refused} binds of carrier-aa");
    eprintln!("[real-pods] a delete, a rollout and two topology switches: at most {max_aa} carrier-aa binds at the carrier ({samples} samples), none refused");

    // 8. Active/standby (maxBinds 1): a forced delete of the active Pod.
    tier.smsc_cluster("smsc-as", 2, "ActiveStandby", "carrier-as", 1, &redis_url)?;
    let sel_as = "app.kubernetes.io/instance=smsc-as,app.kubernetes.io/name=smscd";
    tier.wait_ready(sel_as, 2, Duration::from_secs(120)).await?;
    let binds_of = |body: &str| metric_sum(body, "smscd_inbound_binds", &["account=\"carrier-as\""]);
    let active = wait_for(
        "an active Pod with the Lease, the role label and the endpoints",
        Duration::from_secs(60),
        || async { active_state(&tier, sel_as) },
    )
    .await?;
    let watch = BindWatch::for_account(admin, "carrier-as", Duration::from_millis(200));
    let port_as = tier.node_port("smsc-as", "smpp")?;
    let esme = tier.esme("esme-standby", port_as, 900, 20, 170)?;
    esme.wait_event("bound", 1, Duration::from_secs(30)).await?;
    let t_fail = Instant::now();
    tier.kubectl(&["delete", "pod", &active, "--grace-period=0", "--force"])?;
    let next = wait_for("the standby to take over", Duration::from_secs(90), || async {
        Ok::<_, anyhow::Error>(active_state(&tier, sel_as)?.filter(|p| *p != active))
    })
    .await?;
    eprintln!("[real-pods] active/standby: {active} force-deleted, {next} active (Lease, label, endpoints) after {}", elapsed(t_fail));
    esme.wait_event("bound", 2, Duration::from_secs(60)).await?;
    let s = esme.summary(Duration::from_secs(180)).await?;
    assert_every_receipt(&s, 50)?;
    let (max_binds, samples) = watch.max();
    ensure!(samples > 10, "the carrier's bind gauge was sampled ({samples})");
    ensure!(max_binds <= 1.0, "the carrier saw {max_binds} binds of carrier-as at once");
    let (_, body) = http_get(admin, "/metrics").await?;
    ensure!(binds_of(&body) == 1.0, "the new active Pod is bound upstream: {}", binds_of(&body));
    let carrier_log = tier.logs("carrier")?;
    let refused =
        carrier_log.lines().filter(|l| l.contains("bind refused") && l.contains("carrier-as")).count();
    ensure!(refused == 0, "the carrier refused {refused} binds of carrier-as (a second bind was tried)");

    // 8b. Failover without the operator (issue 13 item 4): smscd labels its own Pod through the
    //     chart's admission policy, which lets it change nothing else.
    let operator = format!("deployment/{}-smsc-operator", release.name);
    tier.kubectl(&["scale", &operator, "--replicas=0"])?;
    wait_for("the operator gone", Duration::from_secs(60), || async {
        Ok::<_, anyhow::Error>(tier.pods("app.kubernetes.io/name=smsc-operator")?.is_empty().then_some(()))
    })
    .await?;
    let t_noop = Instant::now();
    tier.kubectl(&["delete", "pod", &next, "--wait=false"])?;
    let after = wait_for("a new active Pod with no operator running", Duration::from_secs(90), || async {
        Ok::<_, anyhow::Error>(active_state(&tier, sel_as)?.filter(|p| *p != next))
    })
    .await?;
    eprintln!(
        "[real-pods] operator down: {next} deleted, {after} active (Lease, label, endpoints) after {}",
        elapsed(t_noop)
    );
    tier.kubectl(&["scale", &operator, "--replicas=1"])?;
    tier.wait_ready("app.kubernetes.io/name=smsc-operator", 1, Duration::from_secs(60)).await?;
    tier.wait_ready(sel_as, 2, Duration::from_secs(120)).await?;

    // 8c. The active Pod goes last (issue 13 item 6): it carries a pod-deletion-cost the standbys
    //     lack, so a rolling update replaces it last: one Lease handover, not one per Pod.
    let cost = |p: &Value| p["metadata"]["annotations"]["controller.kubernetes.io/pod-deletion-cost"].clone();
    let active = wait_for("the active Pod after the operator's return", Duration::from_secs(60), || async {
        active_state(&tier, sel_as)
    })
    .await?;
    let pods = tier.ready_pods(sel_as)?;
    for p in &pods {
        let want = if name_of(p) == active { Value::from("1000") } else { Value::Null };
        ensure!(cost(p) == want, "pod-deletion-cost of {} (active {active}): {}", name_of(p), cost(p));
    }
    let transitions = || -> anyhow::Result<i64> {
        Ok(tier.json(&["get", "lease", "smsc-as-leader"])?["spec"]["leaseTransitions"].as_i64().unwrap_or(0))
    };
    let before = transitions()?;
    let t_roll_as = Instant::now();
    tier.set_image("smsc-as", SMSCD_IMAGE_B)?;
    tier.wait_rolled("the ActiveStandby rollout", sel_as, SMSCD_IMAGE_B, 2).await?;
    let handovers = transitions()? - before;
    eprintln!("[real-pods] ActiveStandby rollout in {}: {handovers} Lease handover(s)", elapsed(t_roll_as));
    ensure!(handovers <= 1, "a rollout of an ActiveStandby cluster moved the Lease {handovers} times");

    // 9. Operator upgrades complete with 2 and with 1 replicas: a replica waiting for the leader
    //    Lease is Ready, so `helm upgrade --wait` and `kubectl rollout restart` finish.
    let chart = repo_root().join("charts/smsc-operator");
    let deployment = operator;
    for replicas in [2, 1] {
        let t_up = Instant::now();
        cp.run(
            cp.helm()?
                .args([
                    "upgrade",
                    &release.name,
                    "-n",
                    tier.ns.as_str(),
                    "--reuse-values",
                    "--wait",
                    "--timeout",
                    "120s",
                ])
                .args(["--set", &format!("replicaCount={replicas}")])
                .arg(&chart),
        )
        .with_context(|| format!("helm upgrade to {replicas} operator replicas"))?;
        tier.kubectl(&["rollout", "restart", &deployment])?;
        tier.kubectl(&["rollout", "status", &deployment, "--timeout", "120s"])
            .with_context(|| format!("rollout restart with {replicas} operator replicas"))?;
        tier.wait_ready("app.kubernetes.io/name=smsc-operator", replicas, Duration::from_secs(60)).await?;
        eprintln!(
            "[real-pods] operator: helm upgrade --wait and rollout restart with {replicas} replicas done in {}",
            elapsed(t_up)
        );
    }
    // The operator that led through all this still reconciles: a replica change is applied.
    // (A third replica needs a third bind: maxBinds goes up with it, or the checklist refuses.)
    tier.kubectl(&[
        "patch",
        "smsc",
        "smsc",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/replicas","value":3},{"op":"replace","path":"/spec/upstreams/0/maxBinds","value":3}]"#,
    ])?;
    tier.wait_ready(sel, 3, Duration::from_secs(120)).await.context("the upgraded operator reconciles")?;

    // 10. A nonexistent image is Degraded within a minute or two (the Pods' waiting reasons), not
    //     after the Deployment's 10-minute progress deadline; restoring the image clears it.
    let t_bad = Instant::now();
    tier.set_image("smsc", "localhost/smscd:does-not-exist")?;
    let d = wait_for("Degraded ImagePullFailed", Duration::from_secs(150), || async {
        degraded(&tier, "smsc", Some("ImagePullFailed"))
    })
    .await?;
    ensure!(
        d["message"].as_str().is_some_and(|m| m.contains("smscd")),
        "the message names the container: {d}"
    );
    eprintln!(
        "[real-pods] nonexistent image: Degraded {} after {}: {}",
        d["reason"],
        elapsed(t_bad),
        d["message"]
    );
    tier.set_image("smsc", SMSCD_IMAGE_B)?;
    wait_for("Degraded=False once the image exists", Duration::from_secs(150), || async {
        degraded(&tier, "smsc", None)
    })
    .await?;
    tier.wait_ready(sel, 3, Duration::from_secs(120)).await?;

    eprintln!(
        "[real-pods] tier passed in {}\n{}",
        elapsed(t0),
        tier.kubectl(&["get", "pods", "-o", "wide"])?
    );
    drop(release);
    Ok(())
}

/// An SmscCluster whose `spec.handlers.script` answers every submit_sm locally with a fixed
/// message_id. The script is edited to answer another; the running smscd must pick it up (kubelet
/// swaps the ConfigMap file, smscd polls it) with the same Pod: same uid, no container restart.
async fn handlers_hot_reload(tier: &Tier<'_>) -> anyhow::Result<()> {
    let script = |id: &str| {
        format!(
            "from siphon import smpp\n@smpp.on_bind\nasync def authorise(bind):\n    return bind.accept()\n@smpp.on_pdu(\"submit_sm\")\nasync def on_submit(pdu, session):\n    return pdu.reply(message_id=\"{id}\")\n"
        )
    };
    tier.apply(
        "smsc-py",
        &format!(
            "apiVersion: smsc.io/v1alpha1\nkind: SmscCluster\nmetadata: {{name: smsc-py}}\nspec:\n  replicas: 1\n  image: {SMSCD_IMAGE}\n  routing: {{defaultChain: [sim]}}\n  service: {{type: NodePort, externalTrafficPolicy: Cluster}}\n  shutdown: {{preStopSleepSeconds: 0, drainSeconds: 2}}\n  handlers:\n    script: {}\n  pod:\n{}\n",
            serde_json::to_string(&script("py-one"))?,
            indent(PLACEMENT, 4)
        ),
    )?;
    let sel = "app.kubernetes.io/instance=smsc-py,app.kubernetes.io/name=smscd";
    let pod = tier.wait_ready(sel, 1, Duration::from_secs(120)).await?.remove(0);
    let port = tier.node_port("smsc-py", "smpp")?;
    // One submit by an ESME the script's on_bind lets in; the message_id smscd answered.
    let submit = || -> anyhow::Result<Option<String>> {
        let out = Command::new(cache_dir().join("venv/bin/python"))
            .arg(repo_root().join("tests/peers/esme_smpplib.py"))
            .args(["--port", &port.to_string(), "--system-id", "anyone", "--password", "x"])
            .args(["--submit", "1", "--timeout", "10"])
            .stdin(Stdio::null())
            .output()
            .context("running esme_smpplib.py (tools/deps.sh python)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|e| e["event"] == "submit_resp")
            .and_then(|e| e["message_id"].as_str().map(String::from)))
    };
    let id = wait_for("the script's message_id", Duration::from_secs(60), || async {
        Ok::<_, anyhow::Error>(submit()?.filter(|id| id == "py-one"))
    })
    .await?;
    let t_edit = Instant::now();
    let patch = serde_json::json!({ "spec": { "handlers": { "script": script("py-two") } } }).to_string();
    tier.kubectl(&["patch", "smsc", "smsc-py", "--type", "merge", "-p", &patch])?;
    wait_for("the edited script's message_id", Duration::from_secs(180), || async {
        Ok::<_, anyhow::Error>(submit()?.filter(|id| id == "py-two"))
    })
    .await?;
    eprintln!(
        "[real-pods] handlers: submit_sm answered {id}, then py-two {} after the script edit",
        elapsed(t_edit)
    );
    let now = tier.pods(sel)?;
    ensure!(
        now.len() == 1 && now[0]["metadata"]["uid"] == pod["metadata"]["uid"],
        "the same Pod after the script edit: {} -> {:?}",
        pod["metadata"]["uid"],
        now.iter().map(|p| p["metadata"]["uid"].clone()).collect::<Vec<_>>()
    );
    ensure!(
        now[0]["status"]["containerStatuses"][0]["restartCount"] == 0,
        "no container restart: {}",
        now[0]["status"]["containerStatuses"]
    );
    tier.kubectl(&["delete", "smsc", "smsc-py", "--wait=false"])?;
    Ok(())
}

/// The cluster's Degraded condition when it is True with `reason`, or False for `None`.
fn degraded(tier: &Tier<'_>, cluster: &str, reason: Option<&str>) -> anyhow::Result<Option<Value>> {
    let c = tier.json(&["get", "smsc", cluster])?;
    let conds = c["status"]["conditions"].as_array().cloned().unwrap_or_default();
    let d = conds.into_iter().find(|c| c["type"] == "Degraded");
    Ok(d.filter(|d| match reason {
        Some(r) => d["status"] == "True" && d["reason"] == r,
        None => d["status"] == "False",
    }))
}

/// One sample of a topology switch of `cluster` towards `to`: the Service's ready endpoints, each
/// with whether its Pod takes binds (an ActiveActive Pod, or the unexpired Lease holder), and
/// whether the switch is done (every Pod of the new topology, all Ready, and for ActiveStandby
/// one of them holding the Lease with the role label).
fn switch_sample(
    tier: &Tier<'_>,
    selector: &str,
    cluster: &str,
    to: &str,
) -> anyhow::Result<(Vec<(String, bool)>, bool)> {
    let pods = tier.pods(selector)?;
    let lease = tier.json(&["get", "lease", &format!("{cluster}-leader")]).ok();
    let holder = lease.as_ref().and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from));
    let slices =
        tier.json(&["get", "endpointslices", "-l", &format!("kubernetes.io/service-name={cluster}")])?;
    let mut endpoints = Vec::new();
    for s in slices["items"].as_array().cloned().unwrap_or_default() {
        for e in s["endpoints"].as_array().cloned().unwrap_or_default() {
            if e["conditions"]["ready"] != true {
                continue;
            }
            let name = e["targetRef"]["name"].as_str().unwrap_or_default().to_string();
            let pod = pods.iter().find(|p| name_of(p) == name);
            let topology = pod.and_then(|p| p["metadata"]["labels"]["smsc.io/topology"].as_str());
            let takes = topology == Some("ActiveActive") || holder.as_deref() == Some(name.as_str());
            endpoints.push((name, takes));
        }
    }
    let ready = ready_of(&pods);
    let all_new = pods.len() == 2
        && ready.len() == 2
        && ready.iter().all(|p| p["metadata"]["labels"]["smsc.io/topology"] == to);
    let elected = to != "ActiveStandby"
        || ready.iter().any(|p| {
            p["metadata"]["labels"]["smsc.io/role"] == "active"
                && holder.as_deref() == Some(name_of(p).as_str())
        });
    Ok((endpoints, all_new && elected))
}

/// The active Pod when the Lease holder, the one Pod with the role label and the Service's only
/// ready endpoint all agree; `None` while they do not.
fn active_state(tier: &Tier<'_>, selector: &str) -> anyhow::Result<Option<String>> {
    let lease = tier.json(&["get", "lease", "smsc-as-leader"]).ok();
    let holder = lease.as_ref().and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from));
    let labelled: Vec<String> = tier
        .pods(&format!("{selector},smsc.io/role=active"))?
        .iter()
        .filter(|p| is_ready(p))
        .map(name_of)
        .collect();
    let slices = tier.json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=smsc-as"])?;
    let mut ready_targets = Vec::new();
    for s in slices["items"].as_array().cloned().unwrap_or_default() {
        for e in s["endpoints"].as_array().cloned().unwrap_or_default() {
            if e["conditions"]["ready"] == true {
                ready_targets.push(e["targetRef"]["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
    Ok(match (holder, labelled.as_slice(), ready_targets.as_slice()) {
        (Some(h), [l], [t]) if h == *l && l == t => Some(h),
        _ => None,
    })
}

/// Failover times on real Pods (not asserted; docs/benchmarks.md): an ActiveStandby cluster (an
/// upstream with `maxBinds: 1`, Lease 6/4/1 s) loses its active smscd RUNS times each to a crash
/// (SIGKILL to the container's process: the Lease is never released, the kubelet restarts the
/// container), a forced delete (`--grace-period=0 --force`: the API object goes at once, the
/// kubelet still stops the container with SIGTERM) and a plain delete (preStop sleep 2 s, then
/// SIGTERM: smscd drains and releases the Lease). Each run measures from the event to the carrier
/// seeing one bind again (after seeing none), and to the Lease, the role label and the Service's
/// only ready endpoint agreeing on a Pod (for a crash possibly the same Pod, its container
/// restarted). The carrier's bind gauge is sampled throughout and must never show two binds.
#[tokio::test]
#[ignore = "measurement: make bench-failover-real (RUNS=5 cargo test -p smsc-e2e --test real_pods -- --ignored --nocapture)"]
async fn real_pod_failover_times() -> anyhow::Result<()> {
    let cp = control_plane().await?;
    if !real_node_present(cp)? {
        return Ok(());
    }
    let runs: usize = std::env::var("RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let tns = cp.namespace("real-failover").await?;
    let (tier, release, redis_url) = setup(cp, tns.name(), "real-failover", &[("carrier-as", 1)]).await?;
    tier.smsc_cluster("smsc-as", 2, "ActiveStandby", "carrier-as", 1, &redis_url)?;
    let sel = "app.kubernetes.io/instance=smsc-as,app.kubernetes.io/name=smscd";
    let admin = tier.node_port("carrier-admin", "admin")?;
    let watch = BindWatch::for_account(admin, "carrier-as", Duration::from_millis(200));
    for (label, how) in [("kill -9 of smscd", "kill"), ("forced delete", "force"), ("plain delete", "delete")]
    {
        let (mut lease, mut settled) = (Vec::new(), Vec::new());
        for run in 0..runs {
            // Both Pods Ready (the standby too: readiness is about taking binds), one active.
            tier.wait_ready(sel, 2, Duration::from_secs(120)).await?;
            let active =
                wait_for("an active Pod", Duration::from_secs(90), || async { active_state(&tier, sel) })
                    .await?;
            let binds_before = tier
                .logs("carrier")?
                .lines()
                .filter(|l| l.contains("ESME bound") && l.contains("carrier-as"))
                .count();
            let t = Instant::now();
            if how == "kill" {
                // A crash (an OOM kill): SIGKILL to the container's process, found by its Pod's
                // cgroup; the kubelet restarts the container in the same Pod.
                let uid = tier.json(&["get", "pod", &active])?["metadata"]["uid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let pid =
                    pod_process(&uid, "smscd").with_context(|| format!("the smscd process of {active}"))?;
                // SAFETY: kill(2) on a pid we just found; it has no memory effects.
                let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                ensure!(rc == 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
            } else {
                let mut args = vec!["delete", "pod", active.as_str(), "--wait=false"];
                if how == "force" {
                    args.extend(["--grace-period=0", "--force"]);
                }
                tier.kubectl(&args)?;
            }
            // Served again: the carrier logged a new bind of carrier-as and holds exactly one.
            let carrier_bound = || -> anyhow::Result<usize> {
                Ok(tier
                    .logs("carrier")?
                    .lines()
                    .filter(|l| l.contains("ESME bound") && l.contains("carrier-as"))
                    .count())
            };
            let l = wait_for("a leader bound upstream again", Duration::from_secs(90), || async {
                let (_, body) = http_get(admin, "/metrics").await?;
                let now = metric_sum(&body, "smscd_inbound_binds", &["account=\"carrier-as\""]);
                Ok::<_, anyhow::Error>((carrier_bound()? > binds_before && now == 1.0).then(|| t.elapsed()))
            })
            .await?;
            // A crashed container restarts in the same Pod, which may take the Lease back; a
            // deleted Pod's standby takes it.
            let (s, who) =
                wait_for("Lease, label and endpoints to agree", Duration::from_secs(90), || async {
                    Ok::<_, anyhow::Error>(
                        active_state(&tier, sel)?
                            .filter(|a| how == "kill" || *a != active)
                            .map(|a| (t.elapsed(), if a == active { "the same Pod" } else { "the standby" })),
                    )
                })
                .await?;
            eprintln!(
                "{label} run {}: bound upstream again {:.2?}, Lease+label+endpoints {:.2?} ({who})",
                run + 1,
                l,
                s
            );
            lease.push(l);
            settled.push(s);
        }
        let median = |v: &mut Vec<Duration>| {
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        eprintln!(
            "{label}: median over {runs} runs: bound upstream again {:.2?}, Lease+label+endpoints {:.2?} (range {:.2?}-{:.2?})",
            median(&mut lease),
            median(&mut settled),
            settled.first().copied().unwrap_or_default(),
            settled.last().copied().unwrap_or_default()
        );
    }
    let (max, samples) = watch.max();
    eprintln!("carrier bind gauge: max {max} over {samples} samples");
    ensure!(max <= 1.0, "the carrier saw {max} binds at once");
    drop(release);
    Ok(())
}

/// The pid of the process named `comm` in the Pod with this UID (its cgroup path names the Pod:
/// `kubepods/<qos>/pod<uid>/<container>` with the cgroupfs driver).
fn pod_process(uid: &str, comm: &str) -> anyhow::Result<i32> {
    let needle = format!("pod{uid}");
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
        let name = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if cgroup.contains(&needle) && name.trim() == comm {
            return Ok(pid);
        }
    }
    bail!("no process {comm} in a cgroup of pod {uid}")
}

/// Seconds since midnight UTC.
fn utc_seconds_of_day(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default().rem_euclid(86_400.0)
}

/// Seconds since midnight UTC of the first RFC 3339 timestamp (`...THH:MM:SS.fffZ`) on a log
/// line, whatever surrounds it (smscd's text format with colours, or JSON).
fn log_line_seconds_of_day(line: &str) -> Option<f64> {
    let b = line.as_bytes();
    (0..b.len().saturating_sub(19)).find_map(|i| {
        let date = &b[i..i + 10];
        let is_date =
            date.iter()
                .enumerate()
                .all(|(k, c)| if k == 4 || k == 7 { *c == b'-' } else { c.is_ascii_digit() });
        if !is_date || b[i + 10] != b'T' {
            return None;
        }
        let rest = line.get(i + 11..)?;
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))?;
        let mut parts = rest[..end].split(':');
        let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
        Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
    })
}

#[test]
fn log_timestamps_are_read_from_text_and_json_lines() {
    let text = "\u{1b}[2m2026-12-02T07:11:29.507314Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m smscd: shutting down: draining";
    assert_eq!(log_line_seconds_of_day(text), Some(7.0 * 3600.0 + 11.0 * 60.0 + 29.507314));
    let json = r#"{"timestamp":"2026-12-02T23:59:59.5Z","level":"INFO","fields":{"message":"x"}}"#;
    assert_eq!(log_line_seconds_of_day(json), Some(86_399.5));
    assert_eq!(log_line_seconds_of_day("no time here"), None);
}
