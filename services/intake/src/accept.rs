//! Admission: validate a request against the catalogue, stamp it, and normalise it into the job
//! envelope the scheduler and workers read. Shared by the NATS and HTTP front doors.

use std::collections::BTreeMap;

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
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            site: "local".into(),
            default_slo_ms: 1000.0,
            slo_ms: BTreeMap::new(),
            max_slo_ms: 600_000.0,
            max_request_bytes: 64 << 20,
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
    };
    Ok(Admitted {
        meta,
        header_len: normalised.header_len,
        body: normalised.body,
    })
}
