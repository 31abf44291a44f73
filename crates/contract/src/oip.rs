//! Open Inference Protocol (KServe v2) messages: the wire DTOs, and their decoding into and
//! encoding from the domain types [`InferenceRequest`] and [`InferenceResponse`].
//!
//! Two forms travel, on NATS and HTTP alike:
//! - JSON: tensors carry `data` as (possibly nested) JSON arrays.
//! - Binary: the first N bytes are the JSON header, N given by the
//!   `Inference-Header-Content-Length` header; tensors with `parameters.binary_data_size`
//!   carry no `data`, their raw little-endian bytes follow the JSON in tensor order.

use serde::de::{self, DeserializeSeed, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::ContractError;
use crate::tensor::{Datatype, Tensor, TensorData, element_count};
use crate::with_tensor_data;

/// Free-form `parameters` object of the protocol.
pub type Parameters = Map<String, Value>;

/// Request parameter: the latency target in milliseconds, counted from arrival at intake.
pub const PARAM_SLO_MS: &str = "slo_ms";
/// Request parameter: answer every output in the binary form.
pub const PARAM_BINARY_DATA_OUTPUT: &str = "binary_data_output";
/// Tensor parameter: this tensor's data follows the JSON header as this many raw bytes.
pub const PARAM_BINARY_DATA_SIZE: &str = "binary_data_size";
/// Requested-output parameter: answer this output in the binary form.
pub const PARAM_BINARY_DATA: &str = "binary_data";

/// Most dimensions a tensor may declare.
pub const MAX_DIMS: usize = 16;

/// A tensor as it appears on the wire, in a request's `inputs` or a response's `outputs`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireTensor<'a> {
    /// Tensor name.
    pub name: String,
    /// Dimensions (int64 in the protocol; negative values are refused at decode).
    pub shape: Vec<i64>,
    /// Datatype name (`"FP32"`, ...); kept as text so an unknown one gets a clear error.
    pub datatype: String,
    /// Tensor parameters (`binary_data_size`, ...).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Parameters,
    /// JSON data; absent in the binary form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<WireData<'a>>,
}

/// Tensor data on the wire: raw JSON text when decoding (parsed once the datatype is known),
/// a borrowed typed vector when encoding.
#[derive(Debug)]
pub enum WireData<'a> {
    /// Undecoded JSON array, possibly nested.
    Raw(Box<RawValue>),
    /// Typed data to write as a flat JSON array.
    Typed(&'a TensorData),
}

impl Serialize for WireData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WireData::Raw(raw) => raw.serialize(s),
            WireData::Typed(data) => with_tensor_data!(data, v => v.serialize(s)),
        }
    }
}

impl<'de> Deserialize<'de> for WireData<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Box::<RawValue>::deserialize(d).map(WireData::Raw)
    }
}

/// A requested output (`outputs` of a request).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Output parameters (`binary_data`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Parameters,
}

/// An inference request on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireRequest<'a> {
    /// Client-chosen request id, echoed in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Request parameters (`slo_ms`, `binary_data_output`).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Parameters,
    /// Input tensors.
    pub inputs: Vec<WireTensor<'a>>,
    /// Outputs to return; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<RequestedOutput>>,
}

/// An inference response on the wire.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireResponse<'a> {
    /// Model that answered.
    pub model_name: String,
    /// Model version, when versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// The request's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Response parameters ([`ReplyParameters`] and any others).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Parameters,
    /// Output tensors.
    pub outputs: Vec<WireTensor<'a>>,
}

/// What every successful reply carries in `parameters`: where and how the request ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplyParameters {
    /// Id the intake stamped on the request.
    pub request_id: String,
    /// Site of the worker that ran it.
    pub site: String,
    /// Worker id.
    pub worker: String,
    /// CPU architecture of the worker (`std::env::consts::ARCH`).
    pub arch: String,
    /// Device class of the worker.
    pub device_class: String,
    /// Engine that ran it (`ort`, `tract`).
    pub engine: String,
    /// Intra-op threads used.
    pub threads: u32,
    /// Batch it ran in.
    pub batch: u32,
    /// Time waiting in the worker's queue, ms.
    pub queue_ms: f64,
    /// Inference time, ms.
    pub exec_ms: f64,
    /// Arrival at intake to reply, ms.
    pub total_ms: f64,
    /// Latency target, ms.
    pub slo_ms: f64,
    /// Whether `total_ms` exceeded `slo_ms`.
    pub violated: bool,
    /// Scheduling policy that placed it.
    pub policy: String,
}

/// A decoded, well-formed inference request (not yet checked against a model).
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceRequest {
    /// Client-chosen id.
    pub id: Option<String>,
    /// Request parameters other than the ones decoded into fields.
    pub parameters: Parameters,
    /// Latency target from `parameters.slo_ms`, when given.
    pub slo_ms: Option<f64>,
    /// Input tensors, in the order given.
    pub inputs: Vec<Tensor>,
    /// Requested outputs; empty means all.
    pub outputs: Vec<RequestedOutput>,
    /// Whether outputs are to be answered in the binary form.
    pub binary_output: bool,
}

/// A response's domain form.
#[derive(Debug, Clone, PartialEq)]
pub struct InferenceResponse {
    /// Model that answered.
    pub model_name: String,
    /// The request's id.
    pub id: Option<String>,
    /// Response parameters.
    pub parameters: Parameters,
    /// Output tensors.
    pub outputs: Vec<Tensor>,
}

/// A message body and, for the binary form, the length of its JSON header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Value for the `Inference-Header-Content-Length` header; `None` for pure JSON.
    pub header_len: Option<usize>,
    /// The whole body.
    pub body: Vec<u8>,
}

fn bad(msg: impl Into<String>) -> ContractError {
    ContractError::BadRequest(msg.into())
}

/// Splits a body into its JSON header and the binary tail.
fn split_body(body: &[u8], header_len: Option<usize>) -> Result<(&[u8], &[u8]), ContractError> {
    match header_len {
        None => Ok((body, &[])),
        Some(n) if n > body.len() => Err(bad(format!(
            "Inference-Header-Content-Length is {n} but the body has only {} bytes",
            body.len()
        ))),
        Some(n) => Ok(body.split_at(n)),
    }
}

/// Parses the value of an `Inference-Header-Content-Length` header.
pub fn parse_header_len(value: &str) -> Result<usize, ContractError> {
    value.trim().parse().map_err(|_| {
        bad(format!(
            "Inference-Header-Content-Length {value:?} is not a byte count"
        ))
    })
}

fn json_error(e: serde_json::Error) -> ContractError {
    bad(format!("invalid JSON: {e}"))
}

/// Turns wire tensors into domain tensors, taking binary data from `tail` in order.
fn decode_tensors(wire: Vec<WireTensor<'_>>, tail: &[u8]) -> Result<Vec<Tensor>, ContractError> {
    let mut offset = 0usize;
    let mut out = Vec::with_capacity(wire.len());
    for t in wire {
        let name = t.name;
        let datatype = Datatype::parse(&t.datatype)
            .map_err(|e| bad(format!("tensor {name:?}: {}", e_msg(&e))))?;
        if t.shape.len() > MAX_DIMS {
            return Err(bad(format!(
                "tensor {name:?}: {} dimensions, at most {MAX_DIMS} allowed",
                t.shape.len()
            )));
        }
        let shape = t
            .shape
            .iter()
            .map(|&d| usize::try_from(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| {
                bad(format!(
                    "tensor {name:?}: negative dimension in {:?}",
                    t.shape
                ))
            })?;
        let count = element_count(&shape)?;
        let binary_size = match t.parameters.get(PARAM_BINARY_DATA_SIZE) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "tensor {name:?}: binary_data_size must be a non-negative integer"
                        ))
                    })?,
            ),
        };
        let data = match (binary_size, t.data) {
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "tensor {name:?} has both data and binary_data_size"
                )));
            }
            (None, None) => return Err(bad(format!("tensor {name:?} has no data"))),
            (None, Some(WireData::Raw(raw))) => parse_json_data(datatype, raw.get())
                .map_err(|e| bad(format!("tensor {name:?}: {}", e_msg(&e))))?,
            (None, Some(WireData::Typed(d))) => d.clone(),
            (Some(size), None) => {
                let expected = count.checked_mul(datatype.size()).ok_or_else(|| {
                    ContractError::PayloadTooLarge(format!("tensor {name:?} is too large"))
                })?;
                if size != expected {
                    return Err(bad(format!(
                        "tensor {name:?}: binary_data_size {size} but shape {shape:?} of {datatype} needs {expected} bytes"
                    )));
                }
                let end = offset
                    .checked_add(size)
                    .filter(|&e| e <= tail.len())
                    .ok_or_else(|| {
                        bad(format!(
                            "tensor {name:?}: binary data runs past the end of the body ({} bytes after the header)",
                            tail.len()
                        ))
                    })?;
                let data = TensorData::from_le_bytes(datatype, &tail[offset..end])?;
                offset = end;
                data
            }
        };
        if data.len() != count {
            return Err(bad(format!(
                "tensor {name:?}: shape {shape:?} holds {count} elements but data has {}",
                data.len()
            )));
        }
        out.push(Tensor { name, shape, data });
    }
    if offset != tail.len() {
        return Err(bad(format!(
            "{} bytes of binary data follow the header but the tensors declare {offset}",
            tail.len()
        )));
    }
    Ok(out)
}

fn e_msg(e: &ContractError) -> String {
    match e {
        ContractError::BadRequest(m) | ContractError::PayloadTooLarge(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Decodes a request body (JSON or binary form).
pub fn decode_request(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<InferenceRequest, ContractError> {
    let (json, tail) = split_body(body, header_len)?;
    let wire: WireRequest<'_> = serde_json::from_slice(json).map_err(json_error)?;
    let mut parameters = wire.parameters;
    let slo_ms = match parameters.remove(PARAM_SLO_MS) {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_f64()
                .ok_or_else(|| bad("parameters.slo_ms must be a number"))?,
        ),
    };
    let binary_output = match parameters.remove(PARAM_BINARY_DATA_OUTPUT) {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(bad("parameters.binary_data_output must be a boolean")),
    };
    Ok(InferenceRequest {
        id: wire.id,
        parameters,
        slo_ms,
        inputs: decode_tensors(wire.inputs, tail)?,
        outputs: wire.outputs.unwrap_or_default(),
        binary_output,
    })
}

/// Writes tensors as wire tensors, binary ones' bytes appended to `tail`.
fn encode_tensors<'a>(
    tensors: &'a [Tensor],
    binary: impl Fn(&str) -> bool,
    tail: &mut Vec<u8>,
) -> Vec<WireTensor<'a>> {
    tensors
        .iter()
        .map(|t| {
            let mut parameters = Parameters::new();
            let data = if binary(&t.name) {
                parameters.insert(PARAM_BINARY_DATA_SIZE.into(), t.data.byte_len().into());
                t.data.write_le_bytes(tail);
                None
            } else {
                Some(WireData::Typed(&t.data))
            };
            WireTensor {
                name: t.name.clone(),
                shape: t.shape.iter().map(|&d| d as i64).collect(),
                datatype: t.datatype().as_str().to_owned(),
                parameters,
                data,
            }
        })
        .collect()
}

fn assemble(json: Vec<u8>, tail: Vec<u8>) -> Encoded {
    if tail.is_empty() {
        return Encoded {
            header_len: None,
            body: json,
        };
    }
    let header_len = Some(json.len());
    let mut body = Vec::with_capacity(json.len() + tail.len());
    body.extend_from_slice(&json);
    body.extend_from_slice(&tail);
    Encoded { header_len, body }
}

impl InferenceRequest {
    /// A request for `inputs` with a latency target and nothing else.
    pub fn new(inputs: Vec<Tensor>, slo_ms: Option<f64>) -> Self {
        InferenceRequest {
            id: None,
            parameters: Parameters::new(),
            slo_ms,
            inputs,
            outputs: Vec::new(),
            binary_output: false,
        }
    }

    /// Encodes the request; with `binary`, every input travels in the binary form.
    pub fn encode(&self, binary: bool) -> Result<Encoded, ContractError> {
        let mut tail = Vec::new();
        let mut parameters = self.parameters.clone();
        if let Some(slo) = self.slo_ms {
            parameters.insert(PARAM_SLO_MS.into(), slo.into());
        }
        if self.binary_output {
            parameters.insert(PARAM_BINARY_DATA_OUTPUT.into(), true.into());
        }
        let wire = WireRequest {
            id: self.id.clone(),
            parameters,
            inputs: encode_tensors(&self.inputs, |_| binary, &mut tail),
            outputs: (!self.outputs.is_empty()).then(|| self.outputs.clone()),
        };
        let json = serde_json::to_vec(&wire).map_err(json_error)?;
        Ok(assemble(json, tail))
    }

    /// Whether the output named `name` is to be answered in the binary form.
    pub fn wants_binary(&self, name: &str) -> bool {
        self.binary_output
            || self.outputs.iter().any(|o| {
                o.name == name && o.parameters.get(PARAM_BINARY_DATA) == Some(&Value::Bool(true))
            })
    }
}

/// Decodes a response body (JSON or binary form).
pub fn decode_response(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<InferenceResponse, ContractError> {
    let (json, tail) = split_body(body, header_len)?;
    let wire: WireResponse<'_> = serde_json::from_slice(json).map_err(json_error)?;
    Ok(InferenceResponse {
        model_name: wire.model_name,
        id: wire.id,
        parameters: wire.parameters,
        outputs: decode_tensors(wire.outputs, tail)?,
    })
}

impl InferenceResponse {
    /// Encodes the response; outputs for which `binary` says so travel in the binary form.
    pub fn encode(&self, binary: impl Fn(&str) -> bool) -> Result<Encoded, ContractError> {
        let mut tail = Vec::new();
        let wire = WireResponse {
            model_name: self.model_name.clone(),
            model_version: None,
            id: self.id.clone(),
            parameters: self.parameters.clone(),
            outputs: encode_tensors(&self.outputs, binary, &mut tail),
        };
        let json = serde_json::to_vec(&wire).map_err(json_error)?;
        Ok(assemble(json, tail))
    }

    /// The [`ReplyParameters`] in `parameters`, when present and well-formed.
    pub fn reply_parameters(&self) -> Result<ReplyParameters, ContractError> {
        serde_json::from_value(Value::Object(self.parameters.clone()))
            .map_err(|e| bad(format!("reply parameters: {e}")))
    }
}

impl ReplyParameters {
    /// These parameters as a protocol `parameters` object.
    pub fn to_parameters(&self) -> Parameters {
        match serde_json::to_value(self) {
            Ok(Value::Object(map)) => map,
            // A struct of plain fields always serialises to an object.
            _ => Parameters::new(),
        }
    }
}

/// Element types that can be read from a JSON number or boolean.
trait JsonElement: Sized {
    fn from_f64(v: f64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_u64(v: u64) -> Option<Self>;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

macro_rules! json_int {
    ($($t:ty),*) => {$(
        impl JsonElement for $t {
            fn from_f64(_: f64) -> Option<Self> { None }
            fn from_i64(v: i64) -> Option<Self> { <$t>::try_from(v).ok() }
            fn from_u64(v: u64) -> Option<Self> { <$t>::try_from(v).ok() }
        }
    )*};
}
json_int!(u8, u16, u32, u64, i8, i16, i32, i64);

impl JsonElement for f32 {
    fn from_f64(v: f64) -> Option<Self> {
        let x = v as f32;
        x.is_finite().then_some(x)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f32)
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f32)
    }
}

impl JsonElement for f64 {
    fn from_f64(v: f64) -> Option<Self> {
        Some(v)
    }
    fn from_i64(v: i64) -> Option<Self> {
        Some(v as f64)
    }
    fn from_u64(v: u64) -> Option<Self> {
        Some(v as f64)
    }
}

impl JsonElement for bool {
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_bool(b: bool) -> Option<Self> {
        Some(b)
    }
}

/// Appends the elements of a JSON value (a scalar or arbitrarily nested arrays) to a vector.
struct Flatten<'v, T>(&'v mut Vec<T>);

impl<'de, T: JsonElement> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: JsonElement> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a number, a boolean, or an array of them")
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(n) = seq.size_hint() {
            self.0.reserve(n);
        }
        while seq.next_element_seed(Flatten(&mut *self.0))?.is_some() {}
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        push(self.0, T::from_f64(v), v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        push(self.0, T::from_i64(v), v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        push(self.0, T::from_u64(v), v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        push(self.0, T::from_bool(v), v)
    }
}

fn push<T, E: de::Error>(
    out: &mut Vec<T>,
    value: Option<T>,
    shown: impl std::fmt::Display,
) -> Result<(), E> {
    match value {
        Some(v) => {
            out.push(v);
            Ok(())
        }
        None => Err(E::custom(format!(
            "element {shown} does not fit the datatype"
        ))),
    }
}

fn parse_flat<T: JsonElement>(json: &str) -> Result<Vec<T>, ContractError> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(json);
    Flatten(&mut out)
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| bad(format!("data: {e}")))?;
    Ok(out)
}

/// Parses JSON tensor data (flat or nested arrays) for a datatype.
pub fn parse_json_data(datatype: Datatype, json: &str) -> Result<TensorData, ContractError> {
    Ok(match datatype {
        Datatype::Bool => TensorData::Bool(parse_flat(json)?),
        Datatype::Uint8 => TensorData::Uint8(parse_flat(json)?),
        Datatype::Uint16 => TensorData::Uint16(parse_flat(json)?),
        Datatype::Uint32 => TensorData::Uint32(parse_flat(json)?),
        Datatype::Uint64 => TensorData::Uint64(parse_flat(json)?),
        Datatype::Int8 => TensorData::Int8(parse_flat(json)?),
        Datatype::Int16 => TensorData::Int16(parse_flat(json)?),
        Datatype::Int32 => TensorData::Int32(parse_flat(json)?),
        Datatype::Int64 => TensorData::Int64(parse_flat(json)?),
        Datatype::Fp32 => TensorData::Fp32(parse_flat(json)?),
        Datatype::Fp64 => TensorData::Fp64(parse_flat(json)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn image() -> Tensor {
        Tensor::new(
            "x",
            vec![1, 2, 2],
            TensorData::Fp32(vec![0.0, 1.5, -2.25, 3.0]),
        )
        .expect("consistent")
    }

    fn sr() -> Tensor {
        Tensor::new("sr", vec![], TensorData::Int64(vec![16000])).expect("consistent")
    }

    #[test]
    fn json_round_trip() {
        let req = InferenceRequest::new(vec![image(), sr()], Some(50.0));
        let enc = req.encode(false).expect("encodes");
        assert_eq!(enc.header_len, None);
        let back = decode_request(&enc.body, None).expect("decodes");
        assert_eq!(back, req);
    }

    #[test]
    fn binary_round_trip() {
        let mut req = InferenceRequest::new(vec![image(), sr()], Some(50.0));
        req.binary_output = true;
        let enc = req.encode(true).expect("encodes");
        let n = enc.header_len.expect("binary");
        assert_eq!(enc.body.len(), n + 16 + 8);
        let back = decode_request(&enc.body, Some(n)).expect("decodes");
        assert_eq!(back, req);
        assert!(back.wants_binary("x"));
    }

    #[test]
    fn nested_json_data_is_flattened() {
        let body =
            br#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"INT32","data":[[1,2],[3,4]]}]}"#;
        let req = decode_request(body, None).expect("decodes");
        assert_eq!(req.inputs[0].data, TensorData::Int32(vec![1, 2, 3, 4]));
    }

    #[test]
    fn response_round_trip_mixed_forms() {
        let params = ReplyParameters {
            request_id: "r1".into(),
            site: "edge-a".into(),
            worker: "w1".into(),
            arch: "x86_64".into(),
            device_class: "x86_64-cloud-8c".into(),
            engine: "ort".into(),
            threads: 2,
            batch: 1,
            queue_ms: 0.5,
            exec_ms: 3.25,
            total_ms: 4.0,
            slo_ms: 50.0,
            violated: false,
            policy: "synergai".into(),
        };
        let resp = InferenceResponse {
            model_name: "m".into(),
            id: Some("c1".into()),
            parameters: params.to_parameters(),
            outputs: vec![image(), sr()],
        };
        let enc = resp.encode(|name| name == "x").expect("encodes");
        let back = decode_response(&enc.body, enc.header_len).expect("decodes");
        assert_eq!(back, resp);
        assert_eq!(back.reply_parameters().expect("present"), params);
    }

    fn assert_bad(body: &[u8], header_len: Option<usize>, code: ErrorCode, says: &str) {
        let err = decode_request(body, header_len).expect_err(says);
        assert_eq!(err.code(), code, "{err}");
        assert!(
            err.to_string().contains(says),
            "{err:?} does not say {says:?}"
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_reasons() {
        use ErrorCode::{BadRequest, PayloadTooLarge};
        let t = |extra: &str| {
            format!(r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"FP32"{extra}}}]}}"#)
        };
        assert_bad(b"{", None, BadRequest, "invalid JSON");
        assert_bad(b"[]", None, BadRequest, "invalid JSON");
        assert_bad(
            br#"{"inputs":[],"bogus":1}"#,
            None,
            BadRequest,
            "unknown field `bogus`",
        );
        assert_bad(t("").as_bytes(), None, BadRequest, "has no data");
        assert_bad(
            t(r#","data":[1]"#).as_bytes(),
            None,
            BadRequest,
            "holds 2 elements but data has 1",
        );
        assert_bad(
            t(r#","data":[1,"a"]"#).as_bytes(),
            None,
            BadRequest,
            "data:",
        );
        assert_bad(
            t(r#","data":[1e39,1]"#).as_bytes(),
            None,
            BadRequest,
            "does not fit",
        );
        assert_bad(
            br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[1,300]}]}"#,
            None,
            BadRequest,
            "300 does not fit",
        );
        assert_bad(
            br#"{"inputs":[{"name":"x","shape":[2],"datatype":"INT8","data":[1,1.5]}]}"#,
            None,
            BadRequest,
            "1.5 does not fit",
        );
        assert_bad(
            br#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP16","data":[1]}]}"#,
            None,
            BadRequest,
            "FP16 is not supported",
        );
        assert_bad(
            br#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
            None,
            BadRequest,
            "negative dimension",
        );
        assert_bad(
            br#"{"inputs":[{"name":"x","shape":[4294967296,4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#,
            None,
            PayloadTooLarge,
            "overflows",
        );
        assert_bad(
            br#"{"inputs":[],"parameters":{"slo_ms":"fast"}}"#,
            None,
            BadRequest,
            "slo_ms must be a number",
        );
        let deep = format!(
            r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert_bad(deep.as_bytes(), None, BadRequest, "recursion limit");
    }

    #[test]
    fn non_finite_json_numbers_are_refused() {
        use ErrorCode::BadRequest;
        let t = |data: &str| {
            format!(r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"FP32","data":{data}}}]}}"#)
        };
        for lit in ["NaN", "Infinity", "-Infinity", "nan"] {
            assert_bad(
                t(&format!("[1,{lit}]")).as_bytes(),
                None,
                BadRequest,
                "invalid JSON",
            );
        }
        assert_bad(t("[1,1e999]").as_bytes(), None, BadRequest, "out of range");
        assert_bad(t("[1,-1e999]").as_bytes(), None, BadRequest, "out of range");
        assert_bad(t("[1,3.5e38]").as_bytes(), None, BadRequest, "does not fit");
        // FP64 takes what f64 holds, and nothing past it.
        let f64s = r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP64","data":[1e999]}]}"#;
        assert_bad(f64s.as_bytes(), None, BadRequest, "out of range");
    }

    #[test]
    fn declared_shapes_never_drive_allocation() {
        use ErrorCode::{BadRequest, PayloadTooLarge};
        let header = |shape: &str, size: &str| {
            format!(
                r#"{{"inputs":[{{"name":"x","shape":{shape},"datatype":"FP32","parameters":{{"binary_data_size":{size}}}}}]}}"#
            )
        };
        let cases = [
            (
                "[1,4294967296,4294967296,3]",
                "8",
                PayloadTooLarge,
                "overflows",
            ),
            (
                "[1,2147483648,2147483648,3]",
                "8",
                PayloadTooLarge,
                "too large",
            ),
            (
                "[4611686018427387904]",
                "18446744073709551615",
                PayloadTooLarge,
                "too large",
            ),
            (
                "[1073741824]",
                "4294967296",
                BadRequest,
                "runs past the end",
            ),
            ("[-4294967296]", "8", BadRequest, "negative dimension"),
        ];
        for (shape, size, code, says) in cases {
            let h = header(shape, size);
            let body = [h.as_bytes(), &[0u8; 8]].concat();
            assert_bad(&body, Some(h.len()), code, says);
        }
        let json = r#"{"inputs":[{"name":"x","shape":[1,2147483648,2147483648,3],"datatype":"FP32","data":[1]}]}"#;
        assert_bad(json.as_bytes(), None, BadRequest, "but data has 1");
    }

    #[test]
    fn malformed_binary_requests_are_refused_with_reasons() {
        use ErrorCode::BadRequest;
        let header = |size: &str| {
            format!(
                r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"FP32","parameters":{{"binary_data_size":{size}}}}}]}}"#
            )
        };
        let body = |h: &str, tail: &[u8]| [h.as_bytes(), tail].concat();
        let h8 = header("8");
        assert!(decode_request(&body(&h8, &[0; 8]), Some(h8.len())).is_ok());
        assert_bad(
            &body(&h8, &[0; 4]),
            Some(h8.len()),
            BadRequest,
            "runs past the end",
        );
        assert_bad(
            &body(&h8, &[0; 12]),
            Some(h8.len()),
            BadRequest,
            "12 bytes of binary data follow",
        );
        let h6 = header("6");
        assert_bad(
            &body(&h6, &[0; 6]),
            Some(h6.len()),
            BadRequest,
            "needs 8 bytes",
        );
        let hneg = header("-1");
        assert_bad(
            &body(&hneg, &[]),
            Some(hneg.len()),
            BadRequest,
            "non-negative integer",
        );
        assert_bad(&body(&h8, &[0; 8]), Some(10_000), BadRequest, "has only");
        assert_bad(&body(&h8, &[0; 8]), Some(3), BadRequest, "invalid JSON");
        let both = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2],"parameters":{"binary_data_size":8}}]}"#;
        assert_bad(
            &body(both, &[0; 8]),
            Some(both.len()),
            BadRequest,
            "both data and binary_data_size",
        );
        assert!(parse_header_len("12").is_ok());
        assert!(parse_header_len("-3").is_err());
    }
}
