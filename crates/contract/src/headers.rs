//! Names of the message headers SynergAI reads and writes, on NATS and HTTP alike.

/// Length of the JSON header of a binary-form body (Open Inference Protocol).
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "Inference-Header-Content-Length";
/// HTTP-style error code of an error reply (NATS services convention).
pub const NATS_SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";
/// Error text of an error reply (NATS services convention).
pub const NATS_SERVICE_ERROR: &str = "Nats-Service-Error";
/// W3C trace context: the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace context: vendor state.
pub const TRACESTATE: &str = "tracestate";
/// The id the intake stamped on a request, on every message about it.
pub const REQUEST_ID: &str = "Synergai-Request-Id";
/// JetStream de-duplication id (the request id on accepted requests).
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
