//! The JetStream domains a worker's jobs come from. A request is held in the domain of the
//! intake that accepted it: its body in that domain's work queue, its reply claim in that
//! domain's claim stream. A worker at an edge site serves requests of its own site's domain
//! (accepted and scheduled there, also while the site's uplink is cut) and of the hub's, so it
//! keeps one pair of handles per domain it has been sent work from.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::stream::Stream;
use synergai_contract::Subjects;
use synergai_platform::nats::{self as pnats, ReplyClaims};

/// Most domains one worker keeps handles for (a deployment has one per site).
const MAX_DOMAINS: usize = 64;

/// How long reply claims are kept.
pub const CLAIMS_KEEP: Duration = Duration::from_secs(600);

/// One domain's work queue and reply claims.
pub struct DomainStreams {
    /// The work queue of accepted requests, where dispatched jobs' bodies are read.
    pub requests: Stream<()>,
    /// Where replies are claimed.
    pub claims: ReplyClaims,
}

/// Handles per JetStream domain, made on first use.
pub struct Domains {
    nats: Client,
    subjects: Subjects,
    open: Mutex<HashMap<Option<String>, Arc<DomainStreams>>>,
}

impl Domains {
    /// Handles for the domains of `subjects`' deployment; `own` (the worker's site's domain,
    /// already opened) is kept as the first.
    pub fn new(nats: Client, subjects: Subjects, own: DomainStreams) -> Self {
        let mut open = HashMap::new();
        open.insert(subjects.domain().map(str::to_owned), Arc::new(own));
        Domains {
            nats,
            subjects,
            open: Mutex::new(open),
        }
    }

    /// Opens the handles of the worker's own domain: the claim stream is created if missing,
    /// so a worker that cannot reach its JetStream fails at start.
    pub async fn open_own(nats: &Client, subjects: &Subjects) -> Result<DomainStreams, String> {
        let claims = ReplyClaims::open(nats, subjects, CLAIMS_KEEP)
            .await
            .map_err(|e| e.to_string())?;
        let requests = pnats::jetstream(nats, subjects.domain())
            .get_stream_no_info(subjects.request_stream())
            .await
            .map_err(|e| e.to_string())?;
        Ok(DomainStreams { requests, claims })
    }

    /// The handles of `domain` (`None`: the connected server's JetStream). Refused for a name
    /// that is not a domain, or past [`MAX_DOMAINS`].
    pub async fn get(&self, domain: Option<&str>) -> Result<Arc<DomainStreams>, String> {
        let key = domain.map(str::to_owned);
        if let Some(d) = self.lock().get(&key) {
            return Ok(d.clone());
        }
        let subjects = self.subjects.in_domain(domain).map_err(|e| e.to_string())?;
        let requests = pnats::jetstream(&self.nats, domain)
            .get_stream_no_info(subjects.request_stream())
            .await
            .map_err(|e| e.to_string())?;
        // Created by the first claim that finds the stream missing: the domain may be out of
        // reach now (a cut uplink), and the job is still worth running.
        let claims = ReplyClaims::lazy(&self.nats, &subjects, CLAIMS_KEEP);
        let mut open = self.lock();
        if open.len() >= MAX_DOMAINS && !open.contains_key(&key) {
            return Err(format!(
                "jobs from more than {MAX_DOMAINS} JetStream domains; {domain:?} refused"
            ));
        }
        Ok(open
            .entry(key)
            .or_insert_with(|| Arc::new(DomainStreams { requests, claims }))
            .clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Option<String>, Arc<DomainStreams>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the NATS server the tests use (`scripts/services`: JetStream on :4222).
    #[tokio::test]
    async fn handles_are_made_once_per_domain_and_bounded() {
        let nats = async_nats::connect("nats://127.0.0.1:4222")
            .await
            .expect("NATS up (scripts/services)");
        let subjects = Subjects::with_prefix(&format!("unit-domains-{}", std::process::id()));
        let own = Domains::open_own(&nats, &subjects)
            .await
            .expect("own domain");
        let domains = Domains::new(nats.clone(), subjects.clone(), own);

        let own_again = domains.get(None).await.expect("own domain");
        let edge = domains.get(Some("edge-a")).await.expect("a domain");
        assert!(Arc::ptr_eq(
            &edge,
            &domains.get(Some("edge-a")).await.expect("again")
        ));
        assert!(!Arc::ptr_eq(&edge, &own_again));
        for bad in ["a.b", "*", ">", ""] {
            assert!(domains.get(Some(bad)).await.is_err(), "{bad:?} accepted");
        }
        // Two open (the worker's own and edge-a); up to the bound, then refused.
        for i in 2..MAX_DOMAINS {
            domains
                .get(Some(&format!("site-{i}")))
                .await
                .expect("within the bound");
        }
        let refused = domains.get(Some("one-too-many")).await;
        assert!(refused.is_err_and(|e| e.contains("more than")));
        assert!(
            domains.get(Some("site-2")).await.is_ok(),
            "an open one still served"
        );

        let _ = pnats::jetstream(&nats, None)
            .delete_stream(subjects.reply_bucket())
            .await;
    }
}
