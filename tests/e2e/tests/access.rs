//! Access control against a real `nats-server` started with the shipped configuration
//! (`compose/nats/hub.conf`, `leaf-edge-a.conf` and the permission files they include; only the
//! listen ports and the JetStream directory are changed, the passwords come from the
//! environment as in a deployment), with every service connecting as its own user: the
//! permissions are enough for the whole pipeline, and everything outside them is refused.
//! Also: the intake's HTTP bearer token, and NATS over TLS with a private CA.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event, HeaderMap};
use futures_util::StreamExt;
use sqlx::PgPool;
use synergai_contract::headers::INFERENCE_HEADER_CONTENT_LENGTH;
use synergai_contract::oip::{InferenceRequest, decode_response};
use synergai_contract::{ErrorCode, ModelName, Subjects, Token};
use synergai_e2e::{Cluster, WorkerSpec, database_url, inputs, workspace};
use synergai_platform::nats::{self, NatsConfig, error_of};
use tokio::sync::mpsc;

const MODEL: &str = "ppocr_cls";
const ROLES: [&str; 7] = [
    "client",
    "loadgen",
    "intake",
    "scheduler",
    "store",
    "worker",
    "admin",
];

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn nats_server() -> &'static str {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nats-server")
}

/// Test passwords, fresh per run: the role's NATS user name to its password.
fn passwords() -> HashMap<&'static str, String> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    ROLES
        .iter()
        .map(|r| (*r, format!("{r}-{}-{nanos:x}", std::process::id())))
        .chain([
            ("leaf-edge-a", format!("leafa{nanos:x}")),
            ("leaf-edge-b", format!("leafb{nanos:x}")),
        ])
        .collect()
}

/// The servers' environment: each password as the `NATS_PASSWORD_<ROLE>` the shipped configs
/// read.
fn password_env(pw: &HashMap<&'static str, String>) -> Vec<(String, String)> {
    pw.iter()
        .map(|(role, p)| {
            let var = role.to_ascii_uppercase().replace('-', "_");
            (format!("NATS_PASSWORD_{var}"), p.clone())
        })
        .collect()
}

/// A nats-server running a shipped config, stopped on drop.
struct Server {
    child: Child,
    log: PathBuf,
    url: String,
}

impl Server {
    /// Copies `compose/nats/<conf>` and the permission files into `dir`, rewrites the
    /// listen addresses (each must be found: a config that moved them fails the test), and
    /// starts it with `env`.
    async fn start_shipped(
        dir: &Path,
        conf: &str,
        rewrites: &[(&str, String)],
        env: &[(String, String)],
    ) -> Server {
        let shipped = workspace().join("compose/nats");
        for f in ["permissions-edge.conf", "permissions-cloud.conf"] {
            std::fs::copy(shipped.join(f), dir.join(f)).expect("permission file copied");
        }
        let mut text = std::fs::read_to_string(shipped.join(conf)).expect("shipped config");
        for (from, to) in rewrites {
            assert!(text.contains(from), "{conf} has no {from:?}");
            text = text.replace(from, to);
        }
        let path = dir.join(conf);
        std::fs::write(&path, text).expect("config written");
        Server::run(dir, &path, env).await
    }

    async fn run(dir: &Path, path: &Path, env: &[(String, String)]) -> Server {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("nats");
        let log = dir.join(format!("{name}.log"));
        let text = std::fs::read_to_string(path).expect("config");
        let port = text
            .lines()
            .find_map(|l| l.strip_prefix("listen: 127.0.0.1:"))
            .and_then(|p| p.trim().parse::<u16>().ok())
            .expect("a loopback listen port");
        let child = Command::new(nats_server())
            .arg("-c")
            .arg(path)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("nats-server starts");
        let start = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{name} did not start:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server {
            child,
            log,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A client connected as `user`, whose server-reported errors arrive on the receiver.
async fn connect_as(
    url: &str,
    user: &str,
    password: &str,
) -> anyhow::Result<(async_nats::Client, mpsc::UnboundedReceiver<String>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = ConnectOptions::with_user_and_password(user.into(), password.into())
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await?;
    Ok((client, rx))
}

/// Publishes `payload` to `subject` as that client and waits for the server's permissions
/// violation naming the subject.
async fn refused(
    client: &async_nats::Client,
    errors: &mut mpsc::UnboundedReceiver<String>,
    subject: &str,
    payload: &str,
) {
    client
        .publish(subject.to_owned(), payload.to_owned().into())
        .await
        .expect("published (the client does not know the permissions)");
    client.flush().await.expect("flushed");
    let err = tokio::time::timeout(Duration::from_secs(5), errors.recv())
        .await
        .unwrap_or_else(|_| panic!("no permissions violation for a publish to {subject}"))
        .expect("event channel open");
    let lower = err.to_ascii_lowercase();
    assert!(
        lower.contains("permissions violation")
            && lower.contains("publish")
            && err.contains(subject),
        "unexpected server error for {subject}: {err}"
    );
}

/// Every message a spy (the admin user) saw whose payload holds `marker`.
fn forged_seen(seen: &[(String, Vec<u8>)], marker: &str) -> Vec<String> {
    seen.iter()
        .filter(|(_, p)| String::from_utf8_lossy(p).contains(marker))
        .map(|(s, _)| s.clone())
        .collect()
}

/// The worker's NATS service statistics for its `jobs` endpoint: requests received (found by
/// the `worker` metadata of the `synergai-worker` service instances).
async fn jobs_received(admin: &async_nats::Client, worker: &str) -> u64 {
    let inbox = admin.new_inbox();
    let mut sub = admin.subscribe(inbox.clone()).await.expect("subscribed");
    admin
        .publish_with_reply("$SRV.STATS.synergai-worker", inbox.clone(), "".into())
        .await
        .expect("published");
    admin.flush().await.expect("flushed");
    let mut all = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        all.push(serde_json::from_slice::<serde_json::Value>(&m.payload).expect("stats JSON"));
    }
    let ids: Vec<String> = {
        let info_inbox = admin.new_inbox();
        let mut infos = admin
            .subscribe(info_inbox.clone())
            .await
            .expect("subscribed");
        admin
            .publish_with_reply("$SRV.INFO.synergai-worker", info_inbox, "".into())
            .await
            .expect("published");
        admin.flush().await.expect("flushed");
        let mut ids = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), infos.next()).await
        {
            let v: serde_json::Value = serde_json::from_slice(&m.payload).expect("info JSON");
            if v["metadata"]["worker"] == worker {
                ids.push(v["id"].as_str().unwrap_or_default().to_owned());
            }
        }
        ids
    };
    let mine: Vec<&serde_json::Value> = all
        .iter()
        .filter(|v| ids.iter().any(|id| v["id"] == id.as_str()))
        .collect();
    assert_eq!(
        mine.len(),
        1,
        "one stats reply for worker {worker}: {all:?}"
    );
    mine[0]["endpoints"]
        .as_array()
        .and_then(|eps| eps.iter().find(|e| e["name"] == "jobs"))
        .and_then(|e| e["num_requests"].as_u64())
        .unwrap_or_else(|| panic!("no jobs endpoint stats: {}", mine[0]))
}

fn drain(seen: &mut Vec<(String, Vec<u8>)>, sub: &mut async_nats::Subscriber) {
    while let Some(Some(m)) = futures_util::FutureExt::now_or_never(sub.next()) {
        seen.push((m.subject.to_string(), m.payload.to_vec()));
    }
}

async fn infer_as_client(
    client: &async_nats::Client,
    seed: u64,
) -> Result<String, (ErrorCode, String)> {
    let subjects = Subjects::default();
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.expect("subscribed");
    let enc = InferenceRequest::new(inputs(MODEL, 1, seed), Some(20_000.0))
        .encode(true)
        .expect("encodes");
    let mut headers = HeaderMap::new();
    if let Some(n) = enc.header_len {
        headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, n.to_string().as_str());
    }
    client
        .publish_with_reply_and_headers(
            subjects.infer(&ModelName::parse(MODEL).expect("model")),
            inbox,
            headers,
            enc.body.into(),
        )
        .await
        .expect("published");
    let msg = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .map_err(|_| (ErrorCode::DeadlineExceeded, "no reply in 30 s".to_owned()))?
        .expect("reply");
    if let Some(e) = error_of(&msg) {
        return Err(e);
    }
    let n = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(INFERENCE_HEADER_CONTENT_LENGTH))
        .and_then(|v| v.as_str().parse().ok());
    let resp =
        decode_response(&msg.payload, n).map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    Ok(resp
        .reply_parameters()
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?
        .site)
}

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn shipped_permissions_serve_the_pipeline_and_refuse_everything_else(
    pool: PgPool,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pw = passwords();
    let mut env = password_env(&pw);
    let (port, monitor, leaf_port) = (free_port(), free_port(), free_port());
    let hub = Server::start_shipped(
        dir.path(),
        "hub.conf",
        &[
            ("0.0.0.0:4222", format!("127.0.0.1:{port}")),
            ("0.0.0.0:8222", format!("127.0.0.1:{monitor}")),
            ("0.0.0.0:7422", format!("127.0.0.1:{leaf_port}")),
            (
                "/data/jetstream",
                dir.path().join("js").display().to_string(),
            ),
        ],
        &env,
    )
    .await;
    // The edge site's leaf node, joined to the hub with its own credentials.
    env.push((
        "NATS_HUB_LEAF_URL".into(),
        format!(
            "nats-leaf://leaf-edge-a:{}@127.0.0.1:{leaf_port}",
            pw["leaf-edge-a"]
        ),
    ));
    let (leaf_client_port, leaf_monitor) = (free_port(), free_port());
    let leaf = Server::start_shipped(
        dir.path(),
        "leaf-edge-a.conf",
        &[
            ("0.0.0.0:4222", format!("127.0.0.1:{leaf_client_port}")),
            ("0.0.0.0:8222", format!("127.0.0.1:{leaf_monitor}")),
            (
                "/data/jetstream",
                dir.path().join("js-edge-a").display().to_string(),
            ),
        ],
        &env,
    )
    .await;
    let start = Instant::now();
    loop {
        let leafz = monitor_get(leaf_monitor, "/leafz").await;
        if leafz.contains("\"leafnodes\": 1") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "leaf node did not join the hub:\n{}\n{}",
            leaf.log(),
            hub.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // (e) Wrong or missing credentials are refused at connect.
    let wrong = NatsConfig {
        url: hub.url.clone(),
        connect_timeout_ms: 2_000,
        ..NatsConfig::default()
    };
    let err = nats::connect(&wrong.clone().with_user("client", "not-the-password"), "t")
        .await
        .expect_err("a wrong password is refused");
    assert!(
        err.to_string()
            .to_ascii_lowercase()
            .contains("authorization"),
        "{err}"
    );
    assert!(
        nats::connect(&wrong, "t").await.is_err(),
        "a connection without credentials is refused"
    );
    assert!(
        nats::connect(&wrong.clone().with_user("nobody", "x"), "t")
            .await
            .is_err(),
        "an unknown user is refused"
    );
    let err = connect_as(&leaf.url, "worker", "not-the-password")
        .await
        .expect_err("the leaf node refuses a wrong password too");
    assert!(
        err.to_string()
            .to_ascii_lowercase()
            .contains("authorization"),
        "{err}"
    );

    // The cluster: each service as its own user; the test's own connection is the operator's.
    let role_env = |bin: &'static str, role: &'static str| {
        [
            (bin, "SYNERGAI_NATS__USER", role.to_owned()),
            (bin, "SYNERGAI_NATS__PASSWORD", pw[role].clone()),
        ]
    };
    let token = format!("bearer-{}", pw["client"]);
    let mut bin_env: Vec<(&str, &str, String)> = [
        role_env("synergai-store", "store"),
        role_env("synergai-scheduler", "scheduler"),
        role_env("synergai-intake", "intake"),
        role_env("synergai-worker", "worker"),
    ]
    .concat();
    bin_env.push((
        "synergai-intake",
        "SYNERGAI_HTTP__BEARER_TOKEN",
        token.clone(),
    ));
    let workers = [
        WorkerSpec::new("cloud-1", "cloud", "cloud", "0", &[MODEL]),
        WorkerSpec::new("edge-a-1", "edge-a", "edge", "1", &[MODEL])
            .via(&leaf.url)
            .with_env("SYNERGAI_NATS__JETSTREAM_DOMAIN", "edge-a"),
    ];
    let admin_cfg = NatsConfig {
        url: hub.url.clone(),
        subject_prefix: String::new(),
        ..NatsConfig::default()
    }
    .with_user("admin", &pw["admin"]);
    // The hub's services in its JetStream domain; the edge site's own intake and scheduler on
    // its leaf node, in the site's, with the same users as the hub's.
    let mut cluster = Cluster::start_as(
        admin_cfg,
        &database_url(&pool),
        "round-robin",
        &workers,
        &[("SYNERGAI_NATS__JETSTREAM_DOMAIN", "hub".into())],
        &bin_env,
    )
    .await;
    cluster.spawn_site("edge-a", &leaf.url);
    cluster.wait_schedulers(2, 2).await;

    // A spy with every right sees what reaches the server on the job and event subjects.
    let spy = cluster.nats.clone();
    let mut spied = spy.subscribe("synergai.v1.workers.jobs.>").await?;
    let mut spied_events = spy.subscribe("synergai.v1.events.>").await?;
    spy.flush().await?;

    // (a) A client, under its permissions, is served through the whole pipeline: both sites.
    let (client, mut client_errors) = connect_as(&hub.url, "client", &pw["client"]).await?;
    let mut sites = HashMap::<String, u32>::new();
    for seed in 0..4 {
        let site = infer_as_client(&client, seed)
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}\n{}", cluster.logs(), hub.log()));
        *sites.entry(site).or_default() += 1;
    }
    assert!(
        sites.contains_key("cloud") && sites.contains_key("edge-a"),
        "both sites serve: {sites:?}"
    );
    // ... and so does a client at the edge site, on the leaf node (its site's intake and
    // scheduler, in the site's JetStream domain).
    let (edge_client, _) = connect_as(&leaf.url, "client", &pw["client"]).await?;
    infer_as_client(&edge_client, 9)
        .await
        .unwrap_or_else(|e| panic!("edge client: {e:?}\n{}", cluster.logs()));
    // The spy saw the dispatches and the telemetry (so its silence below means something).
    let mut seen: Vec<(String, Vec<u8>)> = Vec::new();
    let start = Instant::now();
    while !(seen
        .iter()
        .any(|(s, _)| s.starts_with("synergai.v1.workers.jobs."))
        && seen
            .iter()
            .any(|(s, _)| s.starts_with("synergai.v1.events.outcome.")))
    {
        drain(&mut seen, &mut spied);
        drain(&mut seen, &mut spied_events);
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the spy saw no dispatch or outcome: {:?}",
            seen.iter().map(|(s, _)| s).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No service was refused anything it needs.
    let violations: Vec<String> = hub
        .log()
        .lines()
        .chain(leaf.log().lines())
        .filter(|l| l.contains("Violation"))
        .map(str::to_owned)
        .collect();
    assert!(violations.is_empty(), "services refused: {violations:#?}");

    // (b) A client publishing to a worker's job subject is refused; the worker gets nothing.
    let jobs_before = jobs_received(&spy, "cloud-1").await;
    let marker = format!("forged-{}", pw["client"]);
    let worker_token = Token::parse("cloud-1")?;
    let subjects = Subjects::default();
    let forged_job = format!("{{\"forged\": \"{marker}\"}}");
    refused(
        &client,
        &mut client_errors,
        &subjects.worker_jobs(&worker_token),
        &forged_job,
    )
    .await;
    // (c) ... as are a fake outcome, fake telemetry and a fake worker status.
    let forged_subjects = [
        subjects.outcome_event(&Token::parse("cloud")?),
        subjects.job_event(&worker_token),
        subjects.worker_event(&worker_token),
        subjects.sched_request(&ModelName::parse(MODEL)?),
        subjects.claims().replace('*', "some-request"),
        "$JS.API.STREAM.DELETE.SYNERGAI_REQUESTS".to_owned(),
    ];
    for subject in &forged_subjects {
        refused(&client, &mut client_errors, subject, &forged_job).await;
    }
    // A client may not listen in on jobs or events either.
    let sub_err = client.subscribe("synergai.v1.events.>").await;
    client.flush().await?;
    let err = tokio::time::timeout(Duration::from_secs(5), client_errors.recv())
        .await
        .ok()
        .flatten()
        .or_else(|| sub_err.err().map(|e| e.to_string()))
        .expect("a refused subscription is reported");
    assert!(
        err.to_ascii_lowercase()
            .contains("permissions violation for subscription"),
        "{err}"
    );

    // (d) A worker publishing to another worker's job subject (or its own) is refused, at the
    // hub and at the edge.
    let (rogue, mut rogue_errors) = connect_as(&hub.url, "worker", &pw["worker"]).await?;
    refused(
        &rogue,
        &mut rogue_errors,
        &subjects.worker_jobs(&Token::parse("edge-a-1")?),
        &forged_job,
    )
    .await;
    let (edge_rogue, mut edge_rogue_errors) =
        connect_as(&leaf.url, "worker", &pw["worker"]).await?;
    refused(
        &edge_rogue,
        &mut edge_rogue_errors,
        &subjects.worker_jobs(&worker_token),
        &forged_job,
    )
    .await;
    // Nor may the intake or the store (only the scheduler dispatches).
    for role in ["intake", "store", "loadgen"] {
        let (c, mut errs) = connect_as(&hub.url, role, &pw[role]).await?;
        refused(
            &c,
            &mut errs,
            &subjects.worker_jobs(&worker_token),
            &forged_job,
        )
        .await;
    }

    // Nothing forged reached the server's subscribers, and the worker received no job.
    spy.flush().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain(&mut seen, &mut spied);
    drain(&mut seen, &mut spied_events);
    let leaked = forged_seen(&seen, &marker);
    assert!(leaked.is_empty(), "forged messages delivered on {leaked:?}");
    assert_eq!(
        jobs_received(&spy, "cloud-1").await,
        jobs_before,
        "the worker received a job nobody dispatched"
    );

    // The HTTP front door with a bearer token: 401 without it or with a wrong one (with a
    // challenge), 200 with it; probes and metrics stay open.
    let enc = InferenceRequest::new(inputs(MODEL, 1, 5), Some(20_000.0)).encode(false)?;
    let path = format!("/v2/models/{MODEL}/infer");
    for (auth, want) in [
        (String::new(), 401),
        ("Authorization: Bearer wrong-token\r\n".to_owned(), 401),
        (format!("Authorization: Basic {token}\r\n"), 401),
        (format!("Authorization: Bearer {token}\r\n"), 200),
        (format!("authorization: bearer {token}\r\n"), 200),
    ] {
        let reply = cluster.http("POST", &path, &auth, &enc.body).await?;
        assert_eq!(
            reply.status,
            want,
            "{auth:?}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        if want == 401 {
            let body: serde_json::Value = serde_json::from_slice(&reply.body)?;
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains("bearer")),
                "{body}"
            );
        } else {
            let resp = decode_response(&reply.body, reply.header_len)?;
            assert_eq!(resp.outputs.len(), 1);
        }
    }
    let meta = cluster
        .http("GET", &format!("/v2/models/{MODEL}"), "", b"")
        .await?;
    assert_eq!(meta.status, 401, "model metadata needs the token");
    let meta = cluster
        .http(
            "GET",
            &format!("/v2/models/{MODEL}"),
            &format!("Authorization: Bearer {token}\r\n"),
            b"",
        )
        .await?;
    assert_eq!(meta.status, 200);
    for open in ["/v2/health/live", "/v2/health/ready", "/metrics", "/v2"] {
        let r = cluster.http("GET", open, "", b"").await?;
        assert_eq!(r.status, 200, "{open} stays open");
    }
    let metrics = cluster.http("GET", "/metrics", "", b"").await?;
    assert!(
        String::from_utf8_lossy(&metrics.body).contains("synergai_intake_unauthorized_total"),
        "refusals are counted"
    );

    // Every refusal the servers logged is one this test provoked: no service was refused
    // anything while serving.
    let provoked = |l: &str| {
        l.contains("Subject \"synergai.v1.workers.jobs.")
            || l.contains("synergai.v1.events.>")
            || forged_subjects
                .iter()
                .any(|f| l.contains(&format!("\"{f}\"")))
    };
    let violations: Vec<String> = hub
        .log()
        .lines()
        .chain(leaf.log().lines())
        .filter(|l| l.contains("Violation") && !provoked(l))
        .map(str::to_owned)
        .collect();
    assert!(violations.is_empty(), "services refused: {violations:#?}");
    assert!(
        hub.log().contains("Publish Violation"),
        "the hub logs refusals (so the checks above can see them)"
    );
    cluster.stop().await;
    Ok(())
}

/// A GET to the NATS monitoring port (plain HTTP/1.0), the body as text.
async fn monitor_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    let _ = s
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `openssl` with `args` in `dir`, failing the test on error.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn nats_over_tls_with_a_private_ca_and_plaintext_refused() -> anyhow::Result<()> {
    // A throwaway CA and a server certificate for 127.0.0.1, made now.
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=synergai-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        d.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    // The shipped hub config, plus the TLS block docs/security.md describes.
    let port = free_port();
    let pw = passwords();
    let env = password_env(&pw);
    let shipped = workspace().join("compose/nats");
    for f in ["permissions-edge.conf", "permissions-cloud.conf"] {
        std::fs::copy(shipped.join(f), d.join(f))?;
    }
    let mut conf = std::fs::read_to_string(shipped.join("hub.conf"))?
        .replace("0.0.0.0:4222", &format!("127.0.0.1:{port}"))
        .replace("0.0.0.0:8222", &format!("127.0.0.1:{}", free_port()))
        .replace("0.0.0.0:7422", &format!("127.0.0.1:{}", free_port()))
        .replace("/data/jetstream", &d.join("js").display().to_string());
    conf.push_str(&format!(
        "\ntls {{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  timeout: 2\n}}\n",
        d.join("server.pem").display().to_string(),
        d.join("server.key").display().to_string(),
        d.join("ca.pem").display().to_string(),
    ));
    let path = d.join("hub-tls.conf");
    std::fs::write(&path, conf)?;
    let server = Server::run(d, &path, &env).await;

    // A service configured with TLS and the CA connects and works (request-reply).
    let tls = NatsConfig {
        url: server.url.clone(),
        tls_required: true,
        tls_ca_file: Some(d.join("ca.pem")),
        connect_timeout_ms: 3_000,
        ..NatsConfig::default()
    };
    let admin = nats::connect(&tls.clone().with_user("admin", &pw["admin"]), "tls-test")
        .await
        .unwrap_or_else(|e| panic!("TLS connect: {e}\n{}", server.log()));
    let mut sub = admin.subscribe("tls.echo").await?;
    let responder = admin.clone();
    tokio::spawn(async move {
        if let Some(m) = sub.next().await
            && let Some(reply) = m.reply
        {
            let _ = responder.publish(reply, m.payload).await;
        }
    });
    admin.flush().await?;
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        admin.request("tls.echo", "over tls".into()),
    )
    .await??;
    assert_eq!(&answer.payload[..], b"over tls");
    // A `tls://` URL alone asks for TLS too.
    let tls_url = NatsConfig {
        url: server.url.replace("nats://", "tls://"),
        tls_required: false,
        ..tls.clone()
    };
    nats::connect(&tls_url.with_user("client", &pw["client"]), "tls-test")
        .await
        .unwrap_or_else(|e| panic!("tls:// connect: {e}"));

    // Refused: a client that will not do TLS ...
    let plain = NatsConfig {
        url: server.url.clone(),
        connect_timeout_ms: 2_000,
        ..NatsConfig::default()
    }
    .with_user("admin", &pw["admin"]);
    assert!(
        nats::connect(&plain, "plain").await.is_err(),
        "a plaintext client is refused"
    );
    // ... and a TLS client that does not trust the server's CA.
    let untrusted = NatsConfig {
        tls_ca_file: None,
        ..tls.clone()
    }
    .with_user("admin", &pw["admin"]);
    assert!(
        nats::connect(&untrusted, "untrusted").await.is_err(),
        "a certificate from an unknown CA is refused"
    );
    // Inconsistent TLS settings are named before any connection is tried.
    let half = NatsConfig {
        tls_cert_file: Some(d.join("server.pem")),
        ..tls.clone()
    };
    let err = nats::connect(&half, "half")
        .await
        .expect_err("cert without key");
    assert!(err.to_string().contains("tls_key_file"), "{err}");
    Ok(())
}
