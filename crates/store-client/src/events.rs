use async_nats::Client;
use async_nats::jetstream;
use synergai_contract::serving::WorkerHeartbeat;
use synergai_contract::store::{JobObservation, Outcome};
use synergai_contract::{Subjects, Token};

use crate::StoreError;

/// Publishes the events the store consumes.
#[derive(Clone)]
pub struct EventPublisher {
    nats: Client,
    js: jetstream::Context,
    subjects: Subjects,
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Decode(e.to_string()))
}

fn token(s: &str) -> Result<Token, StoreError> {
    Token::parse(s).map_err(|e| StoreError::Decode(e.to_string()))
}

impl EventPublisher {
    /// A publisher on `nats` for the deployment whose subjects are `subjects`.
    pub fn new(nats: Client, subjects: Subjects) -> Self {
        EventPublisher {
            js: jetstream::new(nats.clone()),
            nats,
            subjects,
        }
    }

    /// A completed job's execution time (core NATS: loss-tolerant, no acknowledgement).
    pub async fn job(&self, o: &JobObservation) -> Result<(), StoreError> {
        let subject = self.subjects.job_event(&token(&o.worker)?);
        self.nats
            .publish(subject, encode(o)?.into())
            .await
            .map_err(|e| StoreError::Nats(e.to_string()))
    }

    /// A worker's heartbeat (core NATS).
    pub async fn heartbeat(&self, h: &WorkerHeartbeat) -> Result<(), StoreError> {
        let subject = self.subjects.worker_event(&token(&h.status.id)?);
        self.nats
            .publish(subject, encode(h)?.into())
            .await
            .map_err(|e| StoreError::Nats(e.to_string()))
    }

    /// A request's outcome, durably: returns once JetStream has stored it.
    pub async fn outcome(&self, site: &Token, o: &Outcome) -> Result<(), StoreError> {
        let ack = self
            .js
            .publish(self.subjects.outcome_event(site), encode(o)?.into())
            .await
            .map_err(|e| StoreError::Nats(e.to_string()))?;
        ack.await.map_err(|e| StoreError::Nats(e.to_string()))?;
        Ok(())
    }

    /// Publishes outcomes with many acknowledgements in flight, then waits for all of them.
    pub async fn outcomes(&self, site: &Token, batch: &[Outcome]) -> Result<(), StoreError> {
        let subject = self.subjects.outcome_event(site);
        let mut acks = Vec::with_capacity(batch.len());
        for o in batch {
            let ack = self
                .js
                .publish(subject.clone(), encode(o)?.into())
                .await
                .map_err(|e| StoreError::Nats(e.to_string()))?;
            acks.push(ack);
        }
        for ack in futures_util::future::join_all(acks.into_iter().map(|a| a.into_future())).await {
            ack.map_err(|e| StoreError::Nats(e.to_string()))?;
        }
        Ok(())
    }
}
