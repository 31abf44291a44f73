//! The SynergAI wire contract, shared by every service, the load generator and the simulator.
//!
//! - [`oip`] — Open Inference Protocol messages in JSON and binary form, and their domain types.
//! - [`tensor`] — typed tensors and datatypes.
//! - [`subjects`] — every NATS subject, built under the versioned root `synergai.v1`.
//! - [`headers`] — header names.
//! - [`error`] — error codes and the error body.
//! - [`catalog`] — the model catalogue written by `scripts/setup`.
//! - [`profile`] — offline profiling records.
//! - [`serving`] — the serving path's job envelope, worker heartbeat and scheduler messages.
//! - [`site`] — site tiers (edge, cloud).
//! - [`store`] — the profiling store's requests, replies and events.
//! - [`trace`] — W3C trace context.
//! - [`validate`] — decoding and validation of the store's messages (telemetry, outcomes, API).
//!
//! A shipped version of this contract is frozen: snapshot tests (`tests/wire.rs`) catch any
//! change to the serialised JSON.

pub mod catalog;
pub mod error;
pub mod headers;
pub mod inputs;
pub mod oip;
pub mod profile;
pub mod serving;
pub mod site;
pub mod store;
pub mod subjects;
pub mod tensor;
pub mod trace;
pub mod validate;

pub use error::{ContractError, ErrorBody, ErrorCode};
pub use site::Tier;
pub use subjects::{ModelName, StoreOp, Subjects, Token};
pub use tensor::{Datatype, Tensor, TensorData};
