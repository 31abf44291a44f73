//! Admission: validate a request against the catalogue, stamp it, and normalise it into the job
//! envelope the scheduler and workers read. Shared by the NATS and HTTP front doors.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use synergai_contract::catalog::Catalog;
use synergai_contract::oip::{InferenceRequest, decode_request, parse_header_len};
use synergai_contract::serving::JobMeta;
use synergai_contract::{ContractError, ErrorCode, ModelName};

/// Admission settings (`[intake]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// Site of this intake (requests' ingress site).
    pub site: String,
    /// Latency target when a request gives none and its model has no default, ms.
    pub default_slo_ms: f64,
    /// Per-model latency targets when a request gives none, ms.
    pub slo_ms: BTreeMap<String, f64>,
    /// Largest latency target accepted, ms.
    pub max_slo_ms: f64,
    /// Largest request body accepted, bytes (the message bus may allow less).
    pub max_request_bytes: usize,
    /// Most requests one client may have in flight at this intake; the excess is refused at
    /// once with 503, so one client flooding the front door cannot crowd out the others.
    /// 0 disables the limit.
    ///
    /// A client is the reply subject's inbox on NATS (the subject up to and including its
    /// second token, `_INBOX.<nuid>`: one connection's request-reply mux) and the peer's IP
    /// address on HTTP. A request is in flight from its arrival until:
    /// - HTTP: its response is sent (the intake relays the reply, so it knows);
    /// - NATS: the reply goes from worker to client without the intake, so until the job
    ///   event of the batch that answered it (`events.job.<worker>`, which names its requests)
    ///   reaches the intake, or else until its deadline plus `client_release_grace_ms`
    ///   (refusals by the scheduler or a worker come by the deadline).
    ///
    /// Size it to what the workers drain within a typical latency target: a client with that
    /// many requests queued already holds its share.
    pub max_in_flight_per_client: usize,
    /// How long past its deadline an accepted NATS request still counts as in flight when no
    /// job event has named it, ms.
    pub client_release_grace_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            site: "local".into(),
            default_slo_ms: 1000.0,
            slo_ms: BTreeMap::new(),
            max_slo_ms: 600_000.0,
            max_request_bytes: 64 << 20,
            max_in_flight_per_client: 256,
            client_release_grace_ms: 1_000,
        }
    }
}

/// A refused request: the code and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refused {
    /// Reply code.
    pub code: ErrorCode,
    /// Reason.
    pub message: String,
}

impl Refused {
    /// A refusal with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refused {
            code,
            message: message.into(),
        }
    }
}

impl From<ContractError> for Refused {
    fn from(e: ContractError) -> Self {
        Refused::new(e.code(), e.to_string())
    }
}

/// An admitted request: its metadata and its normalised body (binary form, inputs in graph
/// order, requested outputs and output form kept; a body whose inputs all came in the binary
/// form is forwarded as it came).
#[derive(Debug, Clone, PartialEq)]
pub struct Admitted {
    /// Metadata.
    pub meta: JobMeta,
    /// Body.
    pub body: Vec<u8>,
    /// Length of the body's JSON header.
    pub header_len: Option<usize>,
}

/// A request as it arrived, on either front door.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// Model named by the subject or path.
    pub model: &'a str,
    /// Body.
    pub body: &'a [u8],
    /// `Inference-Header-Content-Length`, if given.
    pub header_len: Option<&'a str>,
    /// Where the reply goes.
    pub reply: &'a str,
    /// When it arrived, microseconds since the Unix epoch.
    pub arrival_us: i64,
}

/// Validates and normalises one request; `request_id` is the id to stamp on it.
pub fn admit(
    catalog: &Catalog,
    cfg: &AdmissionConfig,
    incoming: Incoming<'_>,
    request_id: String,
) -> Result<Admitted, Refused> {
    let Incoming {
        model,
        body,
        header_len,
        reply,
        arrival_us,
    } = incoming;
    let name = ModelName::parse(model)
        .map_err(|_| Refused::new(ErrorCode::NotFound, format!("unknown model {model:?}")))?;
    let entry = catalog.model(name.as_str())?;
    if body.len() > cfg.max_request_bytes {
        return Err(Refused::new(
            ErrorCode::PayloadTooLarge,
            format!(
                "request of {} bytes exceeds the limit of {}",
                body.len(),
                cfg.max_request_bytes
            ),
        ));
    }
    let header_len = header_len.map(parse_header_len).transpose()?;
    let req = decode_request(body, header_len)?;
    let slo_ms = match req.slo_ms {
        None => cfg
            .slo_ms
            .get(name.as_str())
            .copied()
            .unwrap_or(cfg.default_slo_ms),
        Some(s) if s.is_finite() && s > 0.0 && s <= cfg.max_slo_ms => s,
        Some(s) => {
            return Err(Refused::new(
                ErrorCode::BadRequest,
                format!(
                    "parameters.slo_ms must be a positive number of milliseconds up to {}, got {s}",
                    cfg.max_slo_ms
                ),
            ));
        }
    };
    for out in &req.outputs {
        if !entry.outputs.iter().any(|o| o.name == out.name) {
            let names: Vec<&str> = entry.outputs.iter().map(|o| o.name.as_str()).collect();
            return Err(Refused::new(
                ErrorCode::BadRequest,
                format!(
                    "model {name} has no output {:?} (outputs: {names:?})",
                    out.name
                ),
            ));
        }
    }
    // Every input's data already in the binary tail (the usual form for large tensors): the
    // body is forwarded as it came, which saves re-encoding it.
    let binary_bytes: usize = req.inputs.iter().map(|t| t.data.byte_len()).sum();
    let forward_as_is = header_len.is_some_and(|n| body.len().checked_sub(n) == Some(binary_bytes));
    let (inputs, samples) = entry.check_inputs(req.inputs)?;
    let normalised = if forward_as_is {
        synergai_contract::oip::Encoded {
            header_len,
            body: body.to_vec(),
        }
    } else {
        InferenceRequest {
            id: req.id,
            parameters: req.parameters,
            slo_ms: Some(slo_ms),
            inputs,
            outputs: req.outputs,
            binary_output: req.binary_output,
        }
        .encode(true)?
    };
    let meta = JobMeta {
        request_id,
        model: name.to_string(),
        reply: reply.to_owned(),
        arrival_us,
        deadline_us: arrival_us + (slo_ms * 1000.0) as i64,
        slo_ms,
        samples: samples as u32,
        payload_bytes: normalised.body.len() as u64,
        ingress_site: cfg.site.clone(),
        domain: None,
    };
    Ok(Admitted {
        meta,
        header_len: normalised.header_len,
        body: normalised.body,
    })
}

/// The client a NATS request comes from: its reply subject up to and including the second
/// token (`_INBOX.<nuid>` of a connection's request-reply mux).
pub fn nats_client(reply: &str) -> &str {
    match reply.match_indices('.').nth(1) {
        Some((i, _)) => &reply[..i],
        None => reply,
    }
}

/// Per-client counts of requests in flight, and the accepted requests still counted, by id.
/// See [`AdmissionConfig::max_in_flight_per_client`].
#[derive(Debug)]
pub struct ClientLimits {
    cap: usize,
    state: Mutex<LimitState>,
}

#[derive(Debug, Default)]
struct LimitState {
    /// Requests in flight by client.
    counts: HashMap<String, usize>,
    /// Accepted requests still counted: client and when they stop counting (µs since epoch).
    held: HashMap<String, (String, i64)>,
    /// The same, by release time.
    by_time: BTreeSet<(i64, String)>,
}

impl LimitState {
    fn leave(&mut self, client: &str) {
        if let Some(n) = self.counts.get_mut(client) {
            *n -= 1;
            if *n == 0 {
                self.counts.remove(client);
            }
        }
    }
}

/// One request's place in its client's count; the place is given back when this is dropped,
/// unless [`hold_until`](Self::hold_until) keeps it past the request's acceptance.
#[derive(Debug)]
#[must_use]
pub struct Slot {
    limits: Arc<ClientLimits>,
    client: Option<String>,
}

impl ClientLimits {
    /// Limits of `cap` requests in flight per client; 0 means unlimited.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(ClientLimits {
            cap,
            state: Mutex::new(LimitState::default()),
        })
    }

    /// A place for one more request of `client`, or 503 when it has `cap` in flight.
    pub fn enter(self: &Arc<Self>, client: &str) -> Result<Slot, Refused> {
        if self.cap == 0 {
            return Ok(Slot {
                limits: self.clone(),
                client: None,
            });
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let n = st.counts.entry(client.to_owned()).or_insert(0);
        if *n >= self.cap {
            return Err(Refused::new(
                ErrorCode::Unavailable,
                format!(
                    "too many requests in flight from this client (limit {}); retry later",
                    self.cap
                ),
            ));
        }
        *n += 1;
        Ok(Slot {
            limits: self.clone(),
            client: Some(client.to_owned()),
        })
    }

    /// An accepted request was answered: its place is given back. Unknown ids are ignored.
    pub fn finished(&self, request_id: &str) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some((client, at)) = st.held.remove(request_id) else {
            return false;
        };
        st.by_time.remove(&(at, request_id.to_owned()));
        st.leave(&client);
        true
    }

    /// Gives back the places of accepted requests whose release time is at or before `now_us`;
    /// returns how many.
    pub fn expire(&self, now_us: i64) -> usize {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        while let Some((at, id)) = st.by_time.first().cloned() {
            if at > now_us {
                break;
            }
            st.by_time.pop_first();
            if let Some((client, _)) = st.held.remove(&id) {
                st.leave(&client);
            }
            n += 1;
        }
        n
    }

    /// Requests in flight from `client`.
    pub fn in_flight(&self, client: &str) -> usize {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.counts.get(client).copied().unwrap_or(0)
    }

    /// Accepted requests still counted, over all clients.
    pub fn held(&self) -> usize {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        st.held.len()
    }
}

impl Slot {
    /// Keeps the place after acceptance, until [`ClientLimits::finished`] names `request_id` or
    /// `release_at_us` passes.
    pub fn hold_until(mut self, request_id: String, release_at_us: i64) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut st = self.limits.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((old, at)) = st.held.insert(request_id.clone(), (client, release_at_us)) {
            // A request id is stamped once; should one repeat, the older place is given back.
            st.by_time.remove(&(at, request_id.clone()));
            st.leave(&old);
        }
        st.by_time.insert((release_at_us, request_id));
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let mut st = self.limits.state.lock().unwrap_or_else(|p| p.into_inner());
            st.leave(&client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_clients_are_their_inbox() {
        assert_eq!(nats_client("_INBOX.abc.17"), "_INBOX.abc");
        assert_eq!(nats_client("_INBOX.abc.17.3"), "_INBOX.abc");
        assert_eq!(nats_client("_INBOX.abc"), "_INBOX.abc");
        assert_eq!(nats_client("reply"), "reply");
    }

    #[test]
    fn a_client_over_its_cap_is_refused_and_others_are_not() {
        let limits = ClientLimits::new(2);
        let a1 = limits.enter("a").expect("first");
        let a2 = limits.enter("a").expect("second");
        let refused = limits.enter("a").expect_err("third");
        assert_eq!(refused.code, ErrorCode::Unavailable);
        let b = limits.enter("b").expect("another client");
        drop(a1);
        let a3 = limits.enter("a").expect("a place was given back");
        assert_eq!(limits.in_flight("a"), 2);
        drop((a2, a3, b));
        assert_eq!(limits.in_flight("a"), 0);
        assert_eq!(limits.in_flight("b"), 0);
    }

    #[test]
    fn accepted_requests_count_until_answered_or_expired() {
        let limits = ClientLimits::new(2);
        limits
            .enter("a")
            .expect("place")
            .hold_until("r1".into(), 100);
        limits
            .enter("a")
            .expect("place")
            .hold_until("r2".into(), 200);
        assert!(
            limits.enter("a").is_err(),
            "both accepted requests still count"
        );
        assert!(limits.finished("r2"));
        assert!(!limits.finished("r2"), "a place is given back once");
        let slot = limits.enter("a").expect("r2's place");
        drop(slot);
        assert_eq!(limits.expire(99), 0);
        assert_eq!(limits.expire(100), 1);
        assert_eq!(limits.in_flight("a"), 0);
        assert_eq!(limits.held(), 0);
        assert!(!limits.finished("r1"), "expired already");
    }

    #[test]
    fn zero_means_unlimited() {
        let limits = ClientLimits::new(0);
        let slots: Vec<Slot> = (0..1000)
            .map(|_| limits.enter("a").expect("unlimited"))
            .collect();
        assert_eq!(limits.in_flight("a"), 0);
        for (i, s) in slots.into_iter().enumerate() {
            s.hold_until(i.to_string(), 0);
        }
        assert_eq!(limits.held(), 0);
    }
}
