//! Client side of the profiling store, for every service that is not the store:
//!
//! - [`StoreClient`]: the store's request-reply operations, with typed errors.
//! - [`EventPublisher`]: job observations and worker status (core NATS), outcomes (JetStream,
//!   awaiting the stream's acknowledgement).
//! - [`ProfileCache`]: the profile table held in memory, refreshed on `profiles updated`
//!   events, and kept serving while the store or PostgreSQL is down; with the cold-start
//!   estimate for keys never measured.

mod cache;
mod client;
mod events;

pub use cache::{ColdStart, Estimate, EstimateSource, ProfileCache, Snapshot};
pub use client::{StoreClient, StoreError};
pub use events::EventPublisher;
