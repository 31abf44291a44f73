//! The SynergAI profiling store. It owns PostgreSQL (profiles, online estimates, workers, the
//! request ledger) and everyone else reaches it over NATS:
//!
//! - request-reply under `synergai.v1.store.` ([`api`]): upsert profile points, the best
//!   configuration by the knee rule ([`knee`]), the whole profile table, ledger summaries, stats;
//! - events ([`ingest`]): job execution times and worker status (core NATS, buffered), request
//!   outcomes (JetStream, acknowledged after commit); it publishes `profiles updated` events.
//!
//! [`db`] holds every query; [`app`] wires the service together.

pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod ingest;
pub mod knee;
pub mod state;

pub use app::Application;
pub use db::MIGRATOR;
