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
    /// Environment of its own (after the cluster's).
    pub env: Vec<(String, String)>,
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
            env: Vec::new(),
        }
    }

    /// The same worker with `key=value` in its environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// The same worker, connected to the NATS server at `url` (its site's leaf node).
    pub fn via(mut self, url: &str) -> Self {
        self.nats = Some(url.to_owned());
        self
    }
}

/// NATS servers joined the way sites are in the field, as `compose/` and `scripts/up` run them: a
/// hub with JetStream in domain `hub`, and a leaf node per edge site, either mapping the
/// JetStream API onto the hub's domain ([`Sites::start`]) or running JetStream of its own in a
/// domain named after the site ([`Sites::start_local`]). Each leaf reaches the hub through a
/// relay ([`Link`]), so a test can cut a site's uplink and leave both servers running. Each on
/// free loopback ports; stopped on drop.
pub struct Sites {
    hub: String,
    leaves: Vec<(String, String)>,
    links: Vec<(String, Link)>,
    procs: Vec<Child>,
    _dir: tempfile::TempDir,
}

/// A TCP relay standing for an edge site's uplink (its leaf node's connection to the hub).
/// [`Link::cut`] closes every connection through it and stops listening, as a link going down
/// does; [`Link::restore`] listens again on the same port, and the leaf node reconnects.
pub struct Link {
    port: u16,
    to: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Link {
    /// Relays connections to `127.0.0.1:port` on to `127.0.0.1:to`.
    pub async fn start(port: u16, to: u16) -> Link {
        let (cut, _) = tokio::sync::watch::channel(false);
        let link = Link { port, to, cut };
        link.listen().await;
        link
    }

    async fn listen(&self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap_or_else(|e| panic!("relay port {}: {e}", self.port));
        let (to, mut cut) = (self.to, self.cut.subscribe());
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = tokio::select! {
                    _ = cut.changed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                let mut cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = cut.changed() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
    }

    /// Cuts the link: every connection through it is closed, and new ones are refused.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Restores a cut link.
    pub async fn restore(&self) {
        self.cut.send_replace(false);
        self.listen().await;
    }
}

impl Sites {
    /// Starts the hub and one leaf node per name in `edge`, each mapping the JetStream API onto
    /// the hub's domain (no JetStream at the site); returns once every leaf is joined.
    pub async fn start(edge: &[&str]) -> Sites {
        Sites::start_with(edge, false).await
    }

    /// As [`Sites::start`], each leaf node with JetStream of its own in domain `<site>`, where
    /// a site's own intake and scheduler keep the requests they accept (the site serves its
    /// clients when its uplink is cut).
    pub async fn start_local(edge: &[&str]) -> Sites {
        Sites::start_with(edge, true).await
    }

    async fn start_with(edge: &[&str], local_jetstream: bool) -> Sites {
        let dir = tempfile::tempdir().expect("temp dir");
        let server = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("nats-server");
        let (port, leaf_port, nowhere) = (free_port(), free_port(), free_port());
        // A leaf node adds the leaf-node URL a hub advertises to the ones it dials, and would
        // reconnect to the hub's port around the relay of a cut link: the hub advertises an
        // address nothing listens on, so each leaf reaches it only through its site's relay.
        let hub_conf = format!(
            "server_name: hub\nlisten: 127.0.0.1:{port}\nmax_payload: 8MB\n\
             jetstream {{\n  domain: hub\n  store_dir: {:?}\n  max_memory_store: 3GB\n}}\n\
             leafnodes {{\n  listen: 127.0.0.1:{leaf_port}\n  advertise: \"127.0.0.1:{nowhere}\"\n}}\n",
            dir.path().join("hub").display().to_string()
        );
        let mut sites = Sites {
            hub: format!("nats://127.0.0.1:{port}"),
            leaves: Vec::new(),
            links: Vec::new(),
            procs: Vec::new(),
            _dir: dir,
        };
        sites.spawn(server, "hub", &hub_conf);
        wait_tcp(port).await;
        for site in edge {
            let (p, uplink) = (free_port(), free_port());
            sites
                .links
                .push(((*site).to_owned(), Link::start(uplink, leaf_port).await));
            let jetstream = if local_jetstream {
                format!(
                    "jetstream {{\n  domain: {site}\n  store_dir: {:?}\n  max_memory_store: 1GB\n}}\n",
                    sites._dir.path().join(site).display().to_string()
                )
            } else {
                "mappings: {\n  \"$JS.API.>\": \"$JS.hub.API.>\"\n}\n".to_owned()
            };
            let conf = format!(
                "server_name: leaf-{site}\nlisten: 127.0.0.1:{p}\nmax_payload: 8MB\n{jetstream}\
                 leafnodes {{\n  remotes: [ {{ url: \"nats-leaf://127.0.0.1:{uplink}\" }} ]\n}}\n"
            );
            sites.spawn(server, &format!("leaf-{site}"), &conf);
            wait_tcp(p).await;
            sites
                .leaves
                .push(((*site).to_owned(), format!("nats://127.0.0.1:{p}")));
        }
        for (site, _) in &sites.leaves {
            sites.wait_joined(site).await;
        }
        sites
    }

    /// Waits until `site`'s leaf node is joined to the hub: a subscription on the leaf is seen
    /// from the hub.
    pub async fn wait_joined(&self, site: &str) {
        let hub = async_nats::connect(&self.hub).await.expect("hub up");
        let leaf = async_nats::connect(self.leaf(site)).await.expect("leaf up");
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
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "leaf node {site} did not join the hub"
            );
        }
    }

    /// Cuts `site`'s uplink: its leaf node and everything connected to it keep running, cut off
    /// from the hub, until [`Sites::restore_link`].
    pub fn cut_link(&self, site: &str) {
        self.link(site).cut();
    }

    /// Restores `site`'s uplink and waits until its leaf node has joined the hub again.
    pub async fn restore_link(&self, site: &str) {
        self.link(site).restore().await;
        self.wait_joined(site).await;
    }

    fn link(&self, site: &str) -> &Link {
        self.links
            .iter()
            .find(|(s, _)| s == site)
            .map(|(_, l)| l)
            .unwrap_or_else(|| panic!("no link for {site}"))
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
    /// How it was started, for [`Cluster::respawn`].
    bin: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
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
    /// Environment for the processes of one binary only: (binary, name, value).
    bin_env: Vec<(String, String, String)>,
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
        let cfg = NatsConfig {
            url: nats.to_owned(),
            subject_prefix: unique_prefix("e2e"),
            ..NatsConfig::default()
        };
        Cluster::start_as(cfg, db_url, policy, workers, env, &[]).await
    }

    /// As [`Cluster::start_on`], with the test's own connection made with `client` (its URL,
    /// subject prefix and credentials: the processes use the same URL and prefix), and
    /// `bin_env` set for the processes of one binary only (`("synergai-worker", name, value)`:
    /// e.g. each service's own NATS user and password).
    pub async fn start_as(
        client: NatsConfig,
        db_url: &str,
        policy: &str,
        workers: &[WorkerSpec],
        env: &[(&str, String)],
        bin_env: &[(&str, &str, String)],
    ) -> Cluster {
        let prefix = client.subject_prefix.clone();
        let cfg = client;
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
            bin_env: bin_env
                .iter()
                .map(|(b, k, v)| (b.to_string(), k.to_string(), v.clone()))
                .collect(),
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
        // A process started again under the same name (a restart) gets a log of its own, so the
        // one before the restart stays readable.
        let generation = self.procs.iter().filter(|p| p.name == name).count();
        let log = match generation {
            0 => self.dir.path().join(format!("{name}.log")),
            n => self.dir.path().join(format!("{name}.{n}.log")),
        };
        std::fs::File::create(&log).expect("log file");
        let args = args.iter().map(|a| (*a).to_owned()).collect();
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        self.launch(name, bin.to_owned(), args, env, log);
    }

    /// Starts `bin` as process `name`, its stderr appended to `log`: the cluster's NATS settings
    /// and environment, then `bin`'s own (its credentials), then `env`.
    fn launch(
        &mut self,
        name: &str,
        bin: String,
        args: Vec<String>,
        env: Vec<(String, String)>,
        log: PathBuf,
    ) {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("log file");
        let mut cmd = Command::new(binary(&bin));
        cmd.args(&args)
            .current_dir(workspace())
            .env_remove("SYNERGAI_CONFIG")
            .env("SYNERGAI_NATS__URL", &self.nats_url)
            .env("SYNERGAI_NATS__SUBJECT_PREFIX", &self.prefix)
            .env("SYNERGAI_TELEMETRY__LOG_FILTER", "info")
            .stdout(Stdio::null())
            .stderr(file);
        let own = self
            .bin_env
            .iter()
            .filter(|(b, _, _)| *b == bin)
            .map(|(_, k, v)| (k, v));
        for (k, v) in self
            .env
            .iter()
            .map(|(k, v)| (k, v))
            .chain(own)
            .chain(env.iter().map(|(k, v)| (k, v)))
        {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            log,
            bin,
            args,
            env,
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
        let env = self.scheduler_env("scheduler");
        self.spawn("scheduler", "synergai-scheduler", &[], &env);
    }

    fn scheduler_env(&mut self, name: &str) -> [(&'static str, String); 6] {
        [
            ("SYNERGAI_HTTP__LISTEN", self.ops_addr(name).to_string()),
            ("SYNERGAI_SCHEDULER__POLICY", self.policy.clone()),
            ("SYNERGAI_SCHEDULER__LOST_AFTER_HEARTBEATS", "4".into()),
            ("SYNERGAI_SCHEDULER__REDELIVER_AFTER_MS", "2000".into()),
            // A test's work queue is small: the test NATS server's JetStream memory is shared.
            (
                "SYNERGAI_SCHEDULER__REQUEST_MAX_BYTES",
                (256u64 << 20).to_string(),
            ),
            ("SYNERGAI_CATALOG", "assets/catalog.json".into()),
        ]
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
        for (k, v) in &w.env {
            env.push((k.as_str(), v.clone()));
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

    /// Waits until `schedulers` scheduler instances each know `workers` workers (every
    /// instance answers on the control subject).
    pub async fn wait_schedulers(&self, schedulers: usize, workers: u32) {
        let start = Instant::now();
        let body = serde_json::to_vec(&SchedulerControl { policy: None }).unwrap_or_default();
        loop {
            let inbox = self.nats.new_inbox();
            let mut sub = self.nats.subscribe(inbox.clone()).await.expect("subscribe");
            self.nats
                .publish_with_reply(
                    self.subjects.scheduler_control(),
                    inbox,
                    body.clone().into(),
                )
                .await
                .expect("publish");
            let mut ready = std::collections::BTreeSet::new();
            while let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(300), sub.next()).await
            {
                if let Ok(s) = serde_json::from_slice::<SchedulerState>(&m.payload)
                    && s.workers == workers
                {
                    ready.insert(s.scheduler);
                }
            }
            if ready.len() >= schedulers {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "schedulers ready {ready:?}, wanted {schedulers} knowing {workers} workers:\n{}",
                self.logs()
            );
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
        let mut seen = std::collections::HashSet::new();
        self.procs
            .iter()
            // A respawned process appends to its predecessor's log: show it once.
            .filter(|p| seen.insert(p.log.clone()))
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
        Cluster::http_at(self.http, method, path, extra_headers, body).await
    }

    /// As [`Cluster::http`], to the HTTP endpoint at `addr` (another intake's).
    pub async fn http_at(
        addr: SocketAddr,
        method: &str,
        path: &str,
        extra_headers: &str,
        body: &[u8],
    ) -> std::io::Result<HttpReply> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await?;
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
            if let Ok(Some(_)) = p.child.try_wait() {
                // Already exited (and reaped): its pid may belong to another process now.
                continue;
            }
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

// Fault injection: killing and restarting the cluster's processes, a NATS server and a
// PostgreSQL server a test owns, and an edge site's leaf node.

impl Cluster {
    /// SIGKILLs process `name` and waits for it to die. Its log stays in [`Cluster::logs`] (as
    /// `name (killed)`); [`Cluster::respawn`] starts it again.
    pub fn kill(&mut self, name: &str) {
        self.signal(name, "KILL");
        assert!(
            self.wait_exit(name, Duration::from_secs(10)).is_some(),
            "{name} survived SIGKILL"
        );
        if let Some(p) = self.procs.iter_mut().find(|p| p.name == name) {
            p.name = format!("{name} (killed)");
        }
    }

    /// Starts the killed process `name` again, as it was started (same binary, arguments,
    /// environment and ports); its log continues the old one's.
    pub fn respawn(&mut self, name: &str) {
        let dead = format!("{name} (killed)");
        let p = self
            .procs
            .iter()
            .rev()
            .find(|p| p.name == dead)
            .unwrap_or_else(|| panic!("no killed process {name}"));
        let (bin, args, env, log) = (p.bin.clone(), p.args.clone(), p.env.clone(), p.log.clone());
        self.launch(name, bin, args, env, log);
    }

    /// Starts another intake, `name`, in the same queue group, with its HTTP endpoint on a free
    /// port (returned).
    pub fn spawn_another_intake(&mut self, name: &str) -> SocketAddr {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let env = [("SYNERGAI_HTTP__LISTEN", http.to_string())];
        self.spawn(name, "synergai-intake", &[], &env);
        http
    }

    /// Starts an intake and a scheduler of their own for edge site `site`, connected to its
    /// leaf node at `leaf` and keeping what they accept in the site's JetStream domain `site`
    /// ([`Sites::start_local`]): `intake-<site>` (its HTTP endpoint on a free port, returned)
    /// and `scheduler-<site>`.
    pub fn spawn_site(&mut self, site: &str, leaf: &str) -> SocketAddr {
        let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let at_site = [
            ("SYNERGAI_NATS__URL", leaf.to_owned()),
            ("SYNERGAI_NATS__JETSTREAM_DOMAIN", site.to_owned()),
        ];
        let mut env = at_site.to_vec();
        env.push(("SYNERGAI_HTTP__LISTEN", http.to_string()));
        env.push(("SYNERGAI_INTAKE__SITE", site.to_owned()));
        self.spawn(&format!("intake-{site}"), "synergai-intake", &[], &env);
        let name = format!("scheduler-{site}");
        let mut env = at_site.to_vec();
        env.extend(self.scheduler_env(&name));
        env.push(("SYNERGAI_SCHEDULER__ID", name.clone()));
        self.spawn(&name, "synergai-scheduler", &[], &env);
        http
    }

    /// Whether process `name` is running (started and not exited).
    pub fn running(&mut self, name: &str) -> bool {
        self.procs
            .iter_mut()
            .find(|p| p.name == name)
            .is_some_and(|p| matches!(p.child.try_wait(), Ok(None)))
    }
}

/// A NATS server with JetStream that a test owns (so it may kill and restart it): on a free
/// loopback port, its JetStream data in a temporary directory that outlives restarts.
pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn nats_server_binary() -> &'static str {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nats-server")
}

impl NatsServer {
    /// Starts it; returns once it accepts connections.
    pub async fn start() -> NatsServer {
        let mut s = NatsServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        s.restart().await;
        s
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILLs it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it (again) on the same port and JetStream directory; returns once it accepts
    /// connections.
    pub async fn restart(&mut self) {
        self.kill();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("log file");
        let store = self.dir.path().join("js");
        let child = Command::new(nats_server_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        self.child = Some(child);
        wait_tcp(self.port).await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server a test owns (so it may stop and start it): a cluster `initdb` made in a
/// temporary directory, on a free loopback port, trust authentication for `postgres`. Run as
/// the `postgres` system user when the test runs as root (PostgreSQL refuses root).
pub struct PrivatePostgres {
    port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// `initdb`, then start it; returns once it accepts connections.
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL installed in /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb");
        let dir = tempfile::tempdir().expect("temp dir");
        let pg = PrivatePostgres {
            port: free_port(),
            dir,
            bin,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(pg.dir.path())
                .status();
            assert!(status.is_ok_and(|s| s.success()), "chown to postgres");
        }
        let data = pg.dir.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
            ],
        );
        pg.start_again();
        pg
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Its URL (database `postgres`).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops it (fast shutdown: connections are cut).
    pub fn stop(&self) {
        let data = self.dir.path().join("data").display().to_string();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"]);
    }

    /// Starts it (again); returns once it accepts connections.
    pub fn start_again(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let log = self.dir.path().join("postgres.log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &["-D", &data, "-l", &log, "-o", &opts, "-w", "start"],
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Sites {
    /// SIGKILLs `site`'s leaf node: the site's link to the hub, and its local NATS, are gone
    /// until [`Sites::restart_leaf`].
    pub fn kill_leaf(&mut self, site: &str) {
        let i = self.leaf_index(site);
        let _ = self.procs[i].kill();
        let _ = self.procs[i].wait();
    }

    /// Starts `site`'s leaf node again with its configuration (same port, same hub).
    pub async fn restart_leaf(&mut self, site: &str) {
        let i = self.leaf_index(site);
        let name = format!("leaf-{site}");
        let path = self._dir.path().join(format!("{name}.conf"));
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(self._dir.path().join(format!("{name}.log")))
            .expect("log file");
        self.procs[i] = Command::new(nats_server_binary())
            .arg("-c")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start nats-server: {e}"));
        let port: u16 = self
            .leaf(site)
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("leaf port");
        wait_tcp(port).await;
    }

    fn leaf_index(&self, site: &str) -> usize {
        // procs: the hub, then the leaves in order.
        1 + self
            .leaves
            .iter()
            .position(|(s, _)| s == site)
            .unwrap_or_else(|| panic!("no leaf node for {site}"))
    }
}
