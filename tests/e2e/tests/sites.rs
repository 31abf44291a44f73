//! Sites joined as in the field (and as `compose/` and `scripts/up` join them): a NATS hub with
//! the cloud's services, and edge workers that reach the system only through their site's leaf
//! node, with the JetStream API mapped onto the hub's domain.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::HeaderMap;
use futures_util::StreamExt;
use sqlx::PgPool;
use synergai_contract::ModelName;
use synergai_contract::headers::INFERENCE_HEADER_CONTENT_LENGTH;
use synergai_contract::oip::{InferenceRequest, decode_response};
use synergai_e2e::{Cluster, Sites, WorkerSpec, database_url, inputs};
use synergai_platform::nats::error_of;

const MODEL: &str = "ppocr_cls";

#[sqlx::test(migrator = "synergai_store::MIGRATOR")]
async fn edge_workers_serve_through_their_sites_leaf_nodes(pool: PgPool) -> anyhow::Result<()> {
    let sites = Sites::start(&["edge-a", "edge-b"]).await;
    let workers = [
        WorkerSpec::new("edge-a-1", "edge-a", "edge", "0", &[MODEL]).via(sites.leaf("edge-a")),
        WorkerSpec::new("edge-b-1", "edge-b", "edge", "1", &[MODEL]).via(sites.leaf("edge-b")),
        WorkerSpec::new("cloud-1", "cloud", "cloud", "0-1", &[MODEL]),
    ];
    // Round-robin, so that every site serves whatever the profiles say.
    let cluster = Cluster::start_on(
        sites.hub(),
        &database_url(&pool),
        "round-robin",
        &workers,
        &[],
    )
    .await;

    // Clients of the hub: every site serves, each request answered once.
    let mut by_site: HashMap<String, u32> = HashMap::new();
    for seed in 0..9 {
        let req = InferenceRequest::new(inputs(MODEL, 1, seed), Some(10_000.0));
        let resp = cluster
            .infer(MODEL, &req, true)
            .await
            .unwrap_or_else(|e| panic!("{e:?}\n{}", cluster.logs()));
        *by_site.entry(resp.reply_parameters()?.site).or_default() += 1;
    }
    assert_eq!(by_site.values().sum::<u32>(), 9);
    for site in ["edge-a", "edge-b", "cloud"] {
        assert!(
            by_site.get(site).is_some_and(|&n| n >= 1),
            "{site}: {by_site:?}"
        );
    }

    // A client at an edge site, on its leaf node: its request crosses to the hub's intake and
    // its reply comes back across the leaf connection.
    let edge_client = async_nats::connect(sites.leaf("edge-a")).await?;
    let inbox = edge_client.new_inbox();
    let mut replies = edge_client.subscribe(inbox.clone()).await?;
    edge_client.flush().await?;
    let enc = InferenceRequest::new(inputs(MODEL, 1, 42), Some(10_000.0)).encode(true)?;
    let mut headers = HeaderMap::new();
    if let Some(n) = enc.header_len {
        headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, n.to_string().as_str());
    }
    edge_client
        .publish_with_reply_and_headers(
            cluster.subjects.infer(&ModelName::parse(MODEL)?),
            inbox,
            headers,
            enc.body.into(),
        )
        .await?;
    let msg = tokio::time::timeout(Duration::from_secs(30), replies.next())
        .await
        .unwrap_or_else(|_| panic!("no reply at the edge\n{}", cluster.logs()))
        .expect("reply");
    assert!(error_of(&msg).is_none(), "{:?}", error_of(&msg));
    let n = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(INFERENCE_HEADER_CONTENT_LENGTH))
        .and_then(|v| v.as_str().parse().ok());
    let params = decode_response(&msg.payload, n)?.reply_parameters()?;
    assert!(!params.violated || params.total_ms > params.slo_ms);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), replies.next())
            .await
            .is_err(),
        "answered twice"
    );

    cluster.stop().await;
    Ok(())
}
