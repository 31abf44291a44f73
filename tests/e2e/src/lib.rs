//! End-to-end harness: the real service binaries (store, scheduler, intake, workers) as child
//! processes on a test's own subject prefix and database, against the real NATS and PostgreSQL.
//!
//! The binaries are the ones cargo built next to the test executable (`cargo test --workspace`
//! builds them; so does `cargo build --workspace --bins`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use async_nats::{Client, HeaderMap};
use futures_util::StreamExt;
use synergai_contract::headers::{INFERENCE_HEADER_CONTENT_LENGTH, TRACEPARENT};
use synergai_contract::oip::{InferenceRequest, InferenceResponse, decode_response};
use synergai_contract::serving::{SchedulerControl, SchedulerState};
use synergai_contract::{ErrorCode, ModelName, Subjects};
use synergai_platform::nats::{NatsConfig, error_of};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A service binary built next to the running test executable (target/<profile>/).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        bin.display()
    );
    bin
}

/// A subject prefix no other test uses.
pub fn unique_prefix(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{tag}{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One worker of a test cluster.
#[derive(Debug, Clone)]
pub struct WorkerSpec {
    /// Worker id.
    pub id: String,
    /// Site.
    pub site: String,
    /// `edge` or `cloud`.
    pub tier: String,
    /// Device class.
    pub device_class: String,
    /// Core set to pin to.
    pub cores: String,
    /// Models served.
    pub models: Vec<String>,
    /// The NATS server it connects to (its site's leaf node); the cluster's when `None`.
    pub nats: Option<String>,
}

impl WorkerSpec {
    /// A worker serving `models` pinned to `cores`.
    pub fn new(id: &str, site: &str, tier: &str, cores: &str, models: &[&str]) -> Self {
        WorkerSpec {
            id: id.into(),
            site: site.into(),
            tier: tier.into(),
            device_class: format!("test-{tier}-{}c", cores.split(['-', ',']).count()),
            cores: cores.into(),
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            nats: None,
        }
    }

    /// The same worker, connected to the NATS server at `url` (its site's leaf node).
    pub fn via(mut self, url: &str) -> Self {
        self.nats = Some(url.to_owned());
        self
    }
}

/// NATS servers joined the way sites are in the field, as `compose/` and `scripts/up` run them: a
/// hub with JetStream in domain `hub`, and a leaf node per edge site that maps the JetStream API
/// onto the hub's domain. Each on free loopback ports; stopped on drop.
pub struct Sites {
    hub: String,
    leaves: Vec<(String, String)>,
    procs: Vec<Child>,
    _dir: tempfile::TempDir,
}

impl Sites {
    /// Starts the hub and one leaf node per name in `edge`; returns once every leaf is joined.
    pub async fn start(edge: &[&str]) -> Sites {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let (port, leaf_port) = (free_port(), free_port());
        let hub_conf = format!(
            "server_name: hub\nlisten: 127.0.0.1:{port}\nmax_payload: 8MB\n\
             jetstream {{\n  domain: hub\n  store_dir: {:?}\n  max_memory_store: 3GB\n}}\n\
             leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n}}\n",
            dir.path().join("hub").display().to_string()
        );
        let mut sites = Sites {
            hub: format!("nats://127.0.0.1:{port}"),
            leaves: Vec::new(),
            procs: Vec::new(),
            _dir: dir,
        };
        sites.spawn(server, "hub", &hub_conf);
        wait_tcp(port).await;
        for site in edge {
            let p = free_port();
            let conf = format!(
                "server_name: leaf-{site}\nlisten: 127.0.0.1:{p}\nmax_payload: 8MB\n\
                 mappings: {{\n  \"$JS.API.>\": \"$JS.hub.API.>\"\n}}\n\
                 leafnodes {{\n  remotes: [ {{ url: \"nats-leaf://127.0.0.1:{leaf_port}\" }} ]\n}}\n"
            );
            sites.spawn(server, &format!("leaf-{site}"), &conf);
            wait_tcp(p).await;
            sites
                .leaves
                .push(((*site).to_owned(), format!("nats://127.0.0.1:{p}")));
        }
        // Joined once a subscription on each leaf is seen from the hub.
        let hub = async_nats::connect(&sites.hub).await.expect("hub up");
        for (site, url) in &sites.leaves {
            let leaf = async_nats::connect(url.as_str()).await.expect("leaf up");
            let subject = format!("sites.ready.{site}");
            let mut sub = leaf.subscribe(subject.clone()).await.expect("subscribe");
            leaf.flush().await.expect("flush");
            let start = Instant::now();
            loop {
                hub.publish(subject.clone(), "x".into())
                    .await
                    .expect("publish");
                hub.flush().await.expect("flush");
                if tokio::time::timeout(Duration::from_millis(200), sub.next())
                    .await
                    .is_ok()
                {
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "leaf node {site} did not join the hub"
                );
            }
        }
        sites
    }

    fn spawn(&mut self, server: &str, name: &str, conf: &str) {
        let path = self._dir.path().join(format!("{name}.conf"));
        std::fs::write(&path, conf).expect("NATS config");
        let log =
            std::fs::File::create(self._dir.path().join(format!("{name}.log"))).expect("log file");
        let child = Command::new(server)
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {server}: {e}"));
        self.procs.push(child);
    }

    /// The hub's URL.
    pub fn hub(&self) -> &str {
        &self.hub
    }

    /// The URL of `site`'s leaf node.
    pub fn leaf(&self, site: &str) -> &str {
        self.leaves
            .iter()
            .find(|(s, _)| s == site)
            .map(|(_, u)| u.as_str())
            .unwrap_or_else(|| panic!("no leaf node for {site}"))
    }
}

impl Drop for Sites {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_tcp(port: u16) {
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing listening on {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

/// A running cluster.
pub struct Cluster {
    /// NATS connection of the test.
    pub nats: Client,
    /// Subjects of the cluster.
    pub subjects: Subjects,
    /// The intake's HTTP address.
    pub http: SocketAddr,
    /// Operations endpoints (`/metrics`, `/health/*`) by process name (`store`, `scheduler`,
    /// each worker's id); the intake's are on `http`.
    pub ops: std::collections::HashMap<String, SocketAddr>,
    /// Environment given to every process.
    env: Vec<(String, String)>,
    /// The NATS server of the cluster (the hub).
    nats_url: String,
    prefix: String,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    db_url: String,
    policy: String,
}

/// The NATS server the tests use.
pub fn nats_url() -> String {
    std::env::var("SYNERGAI_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

impl Cluster {
    /// Starts store, scheduler (with `policy`), intake and `workers`, on the database at
    /// `db_url`; returns once every worker is known to the scheduler.
    pub async fn start(db_url: &str, policy: &str, workers: &[WorkerSpec]) -> Cluster {
        Cluster::start_with_env(db_url, policy, workers, &[]).await
    }

    /// As [`Cluster::start`], with `env` set for every process (e.g. `OTEL_*`).
    pub async fn start_with_env(
        db_url: &str,
        policy: &str,
        workers: &[WorkerSpec],
        env: &[(&str, String)],
    ) -> Cluster {
        Cluster::start_on(&nats_url(), db_url, policy, workers, env).await
    }

    /// As [`Cluster::start_with_env`], on the NATS server at `nats` (the hub of [`Sites`]; a
    /// worker with its own `nats` connects there instead).
    pub async fn start_on(
        nats: &str,
        db_url: &str,
        policy: &str,
        workers: &[WorkerSpec],
        env: &[(&str, String)],
    ) -> Cluster {
        let prefix = unique_prefix("e2e");
        let cfg = NatsConfig {
            url: nats.to_owned(),
            subject_prefix: prefix.clone(),
            ..NatsConfig::default()
        };
        let nats = synergai_platform::nats::connect(&cfg, "e2e-test")
            .await
            .expect("NATS up");
        let mut cluster = Cluster {
            subjects: cfg.subjects(),
            nats,
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            ops: Default::default(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            nats_url: cfg.url.clone(),
            prefix,
            dir: tempfile::tempdir().expect("temp dir"),
            procs: Vec::new(),
            db_url: db_url.to_owned(),
            policy: policy.to_owned(),
        };
        cluster.spawn_store();
        cluster.spawn_scheduler();
        cluster.spawn_intake();
        for w in workers {
            cluster.spawn_worker(w);
        }
        cluster.wait_workers(workers.len()).await;
        cluster.wait_http().await;
        cluster
    }

    fn spawn(&mut self, name: &str, bin: &str, args: &[&str], env: &[(&str, String)]) {
        let log = self.dir.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(binary(bin));
        cmd.args(args)
            .current_dir(workspace())
            .env_remove("SYNERGAI_CONFIG")
            .env("SYNERGAI_NATS__URL", &self.nats_url)
            .env("SYNERGAI_NATS__SUBJECT_PREFIX", &self.prefix)
            .env("SYNERGAI_TELEMETRY__LOG_FILTER", "info")
            .stdout(Stdio::null())
            .stderr(file.try_clone().expect("log file"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.procs.push(Proc {
            name: name.into(),
            child,
            log,
        });
    }

    /// A fresh loopback address for `name`'s operations endpoint.
    fn ops_addr(&mut self, name: &str) -> SocketAddr {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        self.ops.insert(name.to_owned(), addr);
        addr
    }

    fn spawn_store(&mut self) {
        let env = [
            ("SYNERGAI_DATABASE__URL", self.db_url.clone()),
            ("SYNERGAI_HTTP__LISTEN", self.ops_addr("store").to_string()),
            ("SYNERGAI_CATALOG", "assets/catalog.json".into()),
        ];
        self.spawn("store", "synergai-store", &[], &env);
    }

    /// The subject prefix of this cluster.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Starts (or restarts) the scheduler.
    pub fn spawn_scheduler(&mut self) {
        let env = [
            (
                "SYNERGAI_HTTP__LISTEN",
                self.ops_addr("scheduler").to_string(),
            ),
            ("SYNERGAI_SCHEDULER__POLICY", self.policy.clone()),
            ("SYNERGAI_SCHEDULER__LOST_AFTER_HEARTBEATS", "4".into()),
            ("SYNERGAI_SCHEDULER__REDELIVER_AFTER_MS", "2000".into()),
            ("SYNERGAI_CATALOG", "assets/catalog.json".into()),
        ];
        self.spawn("scheduler", "synergai-scheduler", &[], &env);
    }

    fn spawn_intake(&mut self) {
        let env = [("SYNERGAI_HTTP__LISTEN", self.http.to_string())];
        self.spawn("intake", "synergai-intake", &[], &env);
    }

    fn spawn_worker(&mut self, w: &WorkerSpec) {
        let models: Vec<String> = w.models.iter().map(|m| format!("{m:?}")).collect();
        let toml = format!(
            "[worker]\nid = {:?}\nsite = {:?}\ntier = {:?}\ndevice_class = {:?}\ncores = {:?}\n\n\
             [serve]\nmodels = [{}]\nbatches = [1, 2]\nheartbeat_ms = 100\n\n\
             [http]\nlisten = \"{}\"\n",
            w.id,
            w.site,
            w.tier,
            w.device_class,
            w.cores,
            models.join(", "),
            self.ops_addr(&w.id),
        );
        let path = self.dir.path().join(format!("{}.toml", w.id));
        std::fs::write(&path, toml).expect("worker config");
        let mut env = vec![("SYNERGAI_CONFIG", path.display().to_string())];
        if let Some(url) = &w.nats {
            env.push(("SYNERGAI_NATS__URL", url.clone()));
        }
        let name = w.id.clone();
        self.spawn(&name, "synergai-worker", &["serve"], &env);
    }

    /// The scheduler's state, over its control subject.
    pub async fn control(
        &self,
        policy: Option<&str>,
    ) -> Result<SchedulerState, (ErrorCode, String)> {
        let body = serde_json::to_vec(&SchedulerControl {
            policy: policy.map(str::to_owned),
        })
        .unwrap_or_default();
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            self.nats
                .request(self.subjects.scheduler_control(), body.into()),
        )
        .await
        .map_err(|_| (ErrorCode::Unavailable, "no scheduler answered".to_owned()))?
        .map_err(|e| (ErrorCode::Unavailable, e.to_string()))?;
        if let Some(err) = error_of(&reply) {
            return Err(err);
        }
        serde_json::from_slice(&reply.payload).map_err(|e| (ErrorCode::Internal, e.to_string()))
    }

    /// Waits until the scheduler knows `n` workers.
    pub async fn wait_workers(&self, n: usize) {
        let start = Instant::now();
        loop {
            if let Ok(s) = self.control(None).await
                && s.workers as usize == n
            {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "workers did not join:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_http(&self) {
        let start = Instant::now();
        while tokio::net::TcpStream::connect(self.http).await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "intake HTTP not up:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends a signal to a process of the cluster by name (`kill -<signal>`).
    pub fn signal(&mut self, name: &str, signal: &str) {
        let p = self
            .procs
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(p.child.id().to_string())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "kill -{signal} {name} failed"
        );
    }

    /// Waits for a process to exit; returns how it ended (`None`: still running at `timeout`).
    pub fn wait_exit(&mut self, name: &str, timeout: Duration) -> Option<std::process::ExitStatus> {
        let p = self
            .procs
            .iter_mut()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every process's log, for failure messages.
    pub fn logs(&self) -> String {
        self.procs
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {} ---\n{}", p.name, tail.join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// One log, whole.
    pub fn log(&self, name: &str) -> String {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// Publishes a request for `model` with reply subject `reply` (the binary form when `binary`).
    pub async fn publish(
        &self,
        model: &str,
        req: &InferenceRequest,
        binary: bool,
        reply: &str,
        traceparent: Option<&str>,
    ) {
        let enc = req.encode(binary).expect("encodes");
        let mut headers = HeaderMap::new();
        if let Some(n) = enc.header_len {
            headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, n.to_string().as_str());
        }
        if let Some(t) = traceparent {
            headers.insert(TRACEPARENT, t);
        }
        let model = ModelName::parse(model).expect("model name");
        self.nats
            .publish_with_reply_and_headers(
                self.subjects.infer(&model),
                reply.to_owned(),
                headers,
                enc.body.into(),
            )
            .await
            .expect("published");
    }

    /// One request over NATS, answered or refused.
    pub async fn infer(
        &self,
        model: &str,
        req: &InferenceRequest,
        binary: bool,
    ) -> Result<InferenceResponse, (ErrorCode, String)> {
        self.infer_traced(model, req, binary, None)
            .await
            .map(|(resp, _)| resp)
    }

    /// One request over NATS with the client's `traceparent`, if any: the response and the
    /// reply's `traceparent`.
    pub async fn infer_traced(
        &self,
        model: &str,
        req: &InferenceRequest,
        binary: bool,
        traceparent: Option<&str>,
    ) -> Result<(InferenceResponse, Option<String>), (ErrorCode, String)> {
        let inbox = self.nats.new_inbox();
        let mut sub = self
            .nats
            .subscribe(inbox.clone())
            .await
            .expect("subscribed");
        self.publish(model, req, binary, &inbox, traceparent).await;
        let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .map_err(|_| {
                (
                    ErrorCode::DeadlineExceeded,
                    format!("no reply in 30 s\n{}", self.logs()),
                )
            })?
            .ok_or((ErrorCode::Internal, "subscription closed".to_owned()))?;
        if let Some(err) = error_of(&msg) {
            return Err(err);
        }
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let header_len = header(INFERENCE_HEADER_CONTENT_LENGTH).and_then(|v| v.parse().ok());
        let resp = decode_response(&msg.payload, header_len)
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        Ok((resp, header(TRACEPARENT)))
    }
}

/// An HTTP reply: status, the JSON header length of a binary-form body, and the body.
#[derive(Debug, Clone)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// `Inference-Header-Content-Length`, when present.
    pub header_len: Option<usize>,
    /// Body.
    pub body: Vec<u8>,
}

impl Cluster {
    /// A bare HTTP/1.1 exchange with the intake.
    pub async fn http(
        &self,
        method: &str,
        path: &str,
        extra_headers: &str,
        body: &[u8],
    ) -> std::io::Result<HttpReply> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.http).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n{extra_headers}\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no end of headers"))?;
        let headers = String::from_utf8_lossy(&out[..split]).to_string();
        let status = headers
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let header_len = headers
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("inference-header-content-length:")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok());
        Ok(HttpReply {
            status,
            header_len,
            body: out[split + 4..].to_vec(),
        })
    }

    /// One request over HTTP (`POST /v2/models/{model}/infer`), answered or refused.
    pub async fn infer_http(
        &self,
        model: &str,
        req: &InferenceRequest,
        binary: bool,
    ) -> Result<InferenceResponse, (ErrorCode, String)> {
        let enc = req
            .encode(binary)
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        let extra = enc
            .header_len
            .map(|n| format!("Inference-Header-Content-Length: {n}\r\n"))
            .unwrap_or_default();
        let reply = self
            .http(
                "POST",
                &format!("/v2/models/{model}/infer"),
                &extra,
                &enc.body,
            )
            .await
            .map_err(|e| (ErrorCode::Unavailable, e.to_string()))?;
        if reply.status != 200 {
            let code = ErrorCode::try_from(reply.status).unwrap_or(ErrorCode::Internal);
            return Err((code, String::from_utf8_lossy(&reply.body).into_owned()));
        }
        decode_response(&reply.body, reply.header_len)
            .map_err(|e| (ErrorCode::Internal, e.to_string()))
    }

    /// Stops every process (SIGTERM, then SIGKILL after 10 s) and removes the cluster's
    /// JetStream streams.
    pub async fn stop(mut self) {
        self.terminate();
        let js = async_nats::jetstream::new(self.nats.clone());
        for name in [
            self.subjects.request_stream(),
            self.subjects.outcome_stream(),
            self.subjects.reply_bucket(),
        ] {
            let _ = js.delete_stream(name).await;
        }
    }

    fn terminate(&mut self) {
        for p in &mut self.procs {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(p.child.id().to_string())
                .status();
        }
        let start = Instant::now();
        for p in &mut self.procs {
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.procs.clear();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test still leaves no process behind.
        self.terminate();
    }
}

/// The database URL of a `#[sqlx::test]` pool, for the store process.
pub fn database_url(pool: &sqlx::PgPool) -> String {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let server = base
        .rsplit_once('/')
        .map_or(base.as_str(), |(s, _)| s)
        .to_owned();
    let db = pool
        .connect_options()
        .get_database()
        .unwrap_or("postgres")
        .to_owned();
    format!("{server}/{db}")
}

/// The catalogue.
pub fn catalog() -> synergai_contract::catalog::Catalog {
    synergai_contract::catalog::Catalog::load(&workspace().join("assets/catalog.json"))
        .expect("catalog (run scripts/setup)")
}

/// Inputs for `model` at `batch`: floats in [0, 1) from `seed`, fixed values where the catalogue
/// fixes them.
pub fn inputs(model: &str, batch: usize, seed: u64) -> Vec<synergai_contract::Tensor> {
    use synergai_contract::{Datatype, Tensor, TensorData};
    let catalog = catalog();
    let entry = catalog.model(model).expect("catalogued");
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    entry
        .inputs
        .iter()
        .map(|spec| {
            let shape = spec.shape_for_batch(batch);
            let n: usize = shape.iter().product();
            let data = match (spec.datatype, &spec.values) {
                (Datatype::Int64, Some(v)) => TensorData::Int64(vec![v[0] as i64; n]),
                (Datatype::Fp32, _) => TensorData::Fp32((0..n).map(|_| next() as f32).collect()),
                (other, _) => panic!("no generator for {other}"),
            };
            Tensor::new(spec.name.clone(), shape, data).expect("consistent")
        })
        .collect()
}
