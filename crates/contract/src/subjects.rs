//! Subject builders. Every SynergAI subject is built here and nowhere else, under a root
//! that carries the contract version (`synergai.v1`); tests give each run its own root so
//! runs sharing one NATS server never see each other's traffic.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ContractError;

/// The root of every subject of this contract version.
pub const ROOT: &str = "synergai.v1";

/// Longest model name accepted.
pub const MAX_MODEL_NAME: usize = 64;

/// A model name: 1 to 64 ASCII letters, digits, `_` or `-`, so that it is always exactly one
/// NATS subject token and one URL path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

/// Whether `s` can be one subject token: 1 to 64 of `A-Z a-z 0-9 _ -`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_MODEL_NAME
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ModelName {
    /// Validates a model name.
    pub fn parse(name: impl Into<String>) -> Result<Self, ContractError> {
        let name = name.into();
        if is_token(&name) {
            Ok(ModelName(name))
        } else {
            Err(ContractError::BadRequest(format!(
                "invalid model name {name:?}: 1 to {MAX_MODEL_NAME} of A-Z a-z 0-9 _ -"
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = ContractError;
    fn try_from(s: String) -> Result<Self, ContractError> {
        ModelName::parse(s)
    }
}

impl From<ModelName> for String {
    fn from(m: ModelName) -> String {
        m.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A worker id or site name: one subject token (same rules as [`ModelName`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Token(String);

impl Token {
    /// Validates a token.
    pub fn parse(token: impl Into<String>) -> Result<Self, ContractError> {
        let token = token.into();
        if is_token(&token) {
            Ok(Token(token))
        } else {
            Err(ContractError::BadRequest(format!(
                "invalid name {token:?}: 1 to {MAX_MODEL_NAME} of A-Z a-z 0-9 _ -"
            )))
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Token {
    type Error = ContractError;
    fn try_from(s: String) -> Result<Self, ContractError> {
        Token::parse(s)
    }
}

impl From<Token> for String {
    fn from(t: Token) -> String {
        t.0
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Builds the subjects of one SynergAI deployment.
///
/// A deployment whose sites each run their own JetStream (an edge site that keeps serving when
/// its uplink is cut) names each site's JetStream *domain*: the subjects that a JetStream stream
/// captures (accepted requests, reply claims) then carry the domain, so the streams of two
/// domains joined by a leaf node never capture each other's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subjects {
    root: String,
    domain: Option<String>,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects {
            root: ROOT.into(),
            domain: None,
        }
    }
}

impl Subjects {
    /// Subjects under `<prefix>.synergai.v1`; an empty prefix gives the production root.
    pub fn with_prefix(prefix: &str) -> Self {
        if prefix.is_empty() {
            Subjects::default()
        } else {
            Subjects {
                root: format!("{prefix}.{ROOT}"),
                domain: None,
            }
        }
    }

    /// The same subjects for the requests held in JetStream domain `domain` (`None`: the
    /// JetStream of the server connected to, unnamed). A domain must be one subject token.
    pub fn in_domain(&self, domain: Option<&str>) -> Result<Self, ContractError> {
        if let Some(d) = domain
            && !is_token(d)
        {
            return Err(ContractError::BadRequest(format!(
                "invalid JetStream domain {d:?}: 1 to {MAX_MODEL_NAME} of A-Z a-z 0-9 _ -"
            )));
        }
        Ok(Subjects {
            root: self.root.clone(),
            domain: domain.map(str::to_owned),
        })
    }

    /// The JetStream domain of these subjects' streams, if named.
    pub fn domain(&self) -> Option<&str> {
        self.domain.as_deref()
    }

    /// `<root>.<area>` in no domain, `<root>.<area>.<domain>` in one.
    fn in_area(&self, area: &str) -> String {
        match &self.domain {
            None => format!("{}.{area}", self.root),
            Some(d) => format!("{}.{area}.{d}", self.root),
        }
    }

    /// The root every subject starts with.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Public request-reply subject of a model: `synergai.v1.infer.<model>`.
    pub fn infer(&self, model: &ModelName) -> String {
        format!("{}.infer.{model}", self.root)
    }

    /// Wildcard over every model's inference subject: `synergai.v1.infer.*`.
    pub fn infer_any(&self) -> String {
        format!("{}.infer.*", self.root)
    }

    /// Store request subject `synergai.v1.store.<op>` (`profiles.upsert`, `profiles.best`,
    /// `profiles.table`, `ledger.summary`, `stats`).
    pub fn store(&self, op: StoreOp) -> String {
        format!("{}.store.{}", self.root, op.as_str())
    }

    /// Event: a completed job's execution time, `synergai.v1.events.job.<worker>`.
    pub fn job_event(&self, worker: &Token) -> String {
        format!("{}.events.job.{worker}", self.root)
    }

    /// Every worker's job events.
    pub fn job_events(&self) -> String {
        format!("{}.events.job.*", self.root)
    }

    /// Event: a worker's status, `synergai.v1.events.worker.<worker>`.
    pub fn worker_event(&self, worker: &Token) -> String {
        format!("{}.events.worker.{worker}", self.root)
    }

    /// Every worker's status events.
    pub fn worker_events(&self) -> String {
        format!("{}.events.worker.*", self.root)
    }

    /// Event: a request's terminal outcome, `synergai.v1.events.outcome.<site>` (JetStream).
    pub fn outcome_event(&self, site: &Token) -> String {
        format!("{}.events.outcome.{site}", self.root)
    }

    /// Every site's outcome events.
    pub fn outcome_events(&self) -> String {
        format!("{}.events.outcome.*", self.root)
    }

    /// Event: profile estimates moved, `synergai.v1.events.profiles.updated`.
    pub fn profiles_updated(&self) -> String {
        format!("{}.events.profiles.updated", self.root)
    }

    /// A JetStream stream or bucket name for this deployment: `name` behind the prefix, with
    /// every character a stream name may not hold replaced.
    fn stream_name(&self, name: &str) -> String {
        let prefix: String = self
            .root
            .strip_suffix(ROOT)
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("{prefix}{name}")
    }

    /// JetStream stream holding outcome events until the store has written them.
    pub fn outcome_stream(&self) -> String {
        self.stream_name("SYNERGAI_OUTCOMES")
    }

    /// Accepted requests on their way to a scheduler, `synergai.v1.sched.requests.<model>`,
    /// in a domain `synergai.v1.sched.requests.<domain>.<model>` (JetStream work queue: a
    /// request survives a scheduler restart).
    pub fn sched_request(&self, model: &ModelName) -> String {
        format!("{}.{model}", self.in_area("sched.requests"))
    }

    /// Every model's accepted requests (of this domain).
    pub fn sched_requests(&self) -> String {
        format!("{}.*", self.in_area("sched.requests"))
    }

    /// A stream of this domain: `name` behind the prefix, `_<domain>` after it in a domain.
    /// Streams of two domains joined by leaf nodes must not share a name: acknowledgements
    /// (`$JS.ACK.<stream>.<consumer>...`) and direct gets (`$JS.API.DIRECT.GET.<stream>`) name
    /// the stream but not the domain, so one domain's could reach the other's stream.
    fn domain_stream_name(&self, name: &str) -> String {
        match &self.domain {
            None => self.stream_name(name),
            Some(d) => self.stream_name(&format!("{name}_{d}")),
        }
    }

    /// JetStream stream of accepted requests (`SYNERGAI_REQUESTS`, in a domain
    /// `SYNERGAI_REQUESTS_<domain>`).
    pub fn request_stream(&self) -> String {
        self.domain_stream_name("SYNERGAI_REQUESTS")
    }

    /// JetStream stream where the one reply to each request is claimed (`SYNERGAI_REPLIES`, in
    /// a domain `SYNERGAI_REPLIES_<domain>`).
    pub fn reply_bucket(&self) -> String {
        self.domain_stream_name("SYNERGAI_REPLIES")
    }

    /// Every claim subject (the claim stream's, of this domain).
    pub fn claims(&self) -> String {
        format!("{}.*", self.in_area("claims"))
    }

    /// The claim subject of a request, `synergai.v1.claims.<request id>` (in a domain
    /// `synergai.v1.claims.<domain>.<request id>`), if the id is a token.
    pub fn claim(&self, request_id: &str) -> Option<String> {
        is_token(request_id).then(|| format!("{}.{request_id}", self.in_area("claims")))
    }

    /// A worker's job subject, `synergai.v1.workers.jobs.<worker>` (request-reply: the worker
    /// acknowledges queueing).
    pub fn worker_jobs(&self, worker: &Token) -> String {
        format!("{}.workers.jobs.{worker}", self.root)
    }

    /// A worker's ping subject, `synergai.v1.workers.ping.<worker>` (round-trip measurement).
    pub fn worker_ping(&self, worker: &Token) -> String {
        format!("{}.workers.ping.{worker}", self.root)
    }

    /// Event: how a request was placed, `synergai.v1.events.decision.<scheduler>`.
    pub fn decision_event(&self, scheduler: &Token) -> String {
        format!("{}.events.decision.{scheduler}", self.root)
    }

    /// Every scheduler's decision events.
    pub fn decision_events(&self) -> String {
        format!("{}.events.decision.*", self.root)
    }

    /// The schedulers' control subject (request-reply; every instance answers).
    pub fn scheduler_control(&self) -> String {
        format!("{}.scheduler.control", self.root)
    }

    /// The model token of an inference subject, if `subject` is one.
    pub fn model_of_infer<'s>(&self, subject: &'s str) -> Option<&'s str> {
        subject
            .strip_prefix(self.root.as_str())?
            .strip_prefix(".infer.")
            .filter(|m| !m.is_empty() && !m.contains('.'))
    }
}

/// Request-reply operations of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Upsert offline profile points.
    UpsertProfiles,
    /// Best configuration by the knee rule.
    Best,
    /// Whole profile table.
    Table,
    /// Ledger summary.
    LedgerSummary,
    /// Ingest counters.
    Stats,
}

impl StoreOp {
    /// Every operation.
    pub const ALL: [StoreOp; 5] = [
        StoreOp::UpsertProfiles,
        StoreOp::Best,
        StoreOp::Table,
        StoreOp::LedgerSummary,
        StoreOp::Stats,
    ];

    /// The subject suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreOp::UpsertProfiles => "profiles.upsert",
            StoreOp::Best => "profiles.best",
            StoreOp::Table => "profiles.table",
            StoreOp::LedgerSummary => "ledger.summary",
            StoreOp::Stats => "stats",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_single_tokens() {
        assert!(ModelName::parse("inception_v1").is_ok());
        assert!(ModelName::parse("ppocr-det").is_ok());
        for bad in ["", "a.b", "a*", ">", "a b", "é", &"x".repeat(65)] {
            assert!(ModelName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn infer_subjects() {
        let s = Subjects::default();
        let m = ModelName::parse("resnet50").expect("valid");
        assert_eq!(s.infer(&m), "synergai.v1.infer.resnet50");
        assert_eq!(s.infer_any(), "synergai.v1.infer.*");
        assert_eq!(
            s.model_of_infer("synergai.v1.infer.resnet50"),
            Some("resnet50")
        );
        assert_eq!(s.model_of_infer("synergai.v1.infer."), None);
        assert_eq!(s.model_of_infer("synergai.v2.infer.resnet50"), None);

        let w = Token::parse("edge-a_w1").expect("valid");
        assert_eq!(s.store(StoreOp::Best), "synergai.v1.store.profiles.best");
        assert_eq!(s.job_event(&w), "synergai.v1.events.job.edge-a_w1");
        assert_eq!(s.outcome_events(), "synergai.v1.events.outcome.*");
        assert_eq!(s.outcome_stream(), "SYNERGAI_OUTCOMES");
        assert_eq!(
            Subjects::with_prefix("t-4.x").outcome_stream(),
            "t_4_x_SYNERGAI_OUTCOMES"
        );
        assert!(Token::parse("a.b").is_err());
        assert_eq!(s.sched_request(&m), "synergai.v1.sched.requests.resnet50");
        assert_eq!(s.worker_jobs(&w), "synergai.v1.workers.jobs.edge-a_w1");
        assert_eq!(
            Subjects::with_prefix("t1").request_stream(),
            "t1_SYNERGAI_REQUESTS"
        );
        assert_eq!(s.reply_bucket(), "SYNERGAI_REPLIES");

        let t = Subjects::with_prefix("t42");
        assert_eq!(t.infer(&m), "t42.synergai.v1.infer.resnet50");
        assert_eq!(
            t.model_of_infer("t42.synergai.v1.infer.vgg19"),
            Some("vgg19")
        );
        assert_eq!(t.model_of_infer("synergai.v1.infer.vgg19"), None);
    }

    #[test]
    fn streamed_subjects_carry_the_domain() {
        let m = ModelName::parse("resnet50").expect("valid");
        let hub = Subjects::default().in_domain(Some("hub")).expect("valid");
        let edge = Subjects::with_prefix("t1")
            .in_domain(Some("edge-a"))
            .expect("valid");
        assert_eq!(hub.domain(), Some("hub"));
        assert_eq!(
            hub.sched_request(&m),
            "synergai.v1.sched.requests.hub.resnet50"
        );
        assert_eq!(hub.sched_requests(), "synergai.v1.sched.requests.hub.*");
        assert_eq!(hub.claims(), "synergai.v1.claims.hub.*");
        assert_eq!(
            edge.claim("0190-ab").as_deref(),
            Some("t1.synergai.v1.claims.edge-a.0190-ab")
        );
        // Their streams' names carry it too.
        assert_eq!(hub.request_stream(), "SYNERGAI_REQUESTS_hub");
        assert_eq!(edge.reply_bucket(), "t1_SYNERGAI_REPLIES_edge-a");
        // Everything else is the same in every domain, and the unnamed domain is the default.
        assert_eq!(hub.infer(&m), Subjects::default().infer(&m));
        assert_eq!(hub.outcome_stream(), "SYNERGAI_OUTCOMES");
        let none = hub.in_domain(None).expect("valid");
        assert_eq!(none, Subjects::default());
        for bad in ["", "a.b", "*", ">", "a b"] {
            assert!(Subjects::default().in_domain(Some(bad)).is_err(), "{bad:?}");
        }
    }
}
