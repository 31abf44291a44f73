//! The SynergAI worker: runs catalogue models on ONNX Runtime and tract with the
//! configuration (engine, intra-op threads, batch) the scheduler chooses, and measures them
//! offline (`synergai-worker profile`).
//!
//! - [`engine`] — the engine trait and the two engines.
//! - [`models`] — checksum-verified model files and sessions checked against the catalogue.
//! - [`profile`] — the offline sweep.
//! - [`serve`] — the worker as a service: queue, executor, replies, heartbeats.
//! - [`inputs`] — random inputs for profiling and tests.
//! - [`config`] — configuration.

pub mod config;
pub mod engine;
pub use synergai_contract::inputs;
pub mod models;
pub mod profile;
pub mod serve;

use std::path::PathBuf;

use synergai_platform::cpu;

use crate::config::WorkerConfig;
use crate::engine::ort::OrtEngine;
use crate::engine::tract::TractEngine;
use crate::engine::{Engine, EngineError};
use crate::models::Models;
use crate::profile::DeviceFacts;

/// Why the worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The catalogue is missing or invalid.
    #[error(transparent)]
    Catalog(#[from] synergai_contract::catalog::CatalogError),
    /// An engine could not start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// CPU facts or pinning failed.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// No ONNX Runtime library is configured or catalogued for this architecture.
    #[error(
        "no ONNX Runtime library for {0}: run scripts/setup, or set engines.ort.library_path (SYNERGAI_ENGINES__ORT__LIBRARY_PATH)"
    )]
    NoOrtLibrary(String),
}

/// A worker's models and engines, ready to open sessions.
pub struct Worker {
    /// The catalogue and verified model files.
    pub models: Models,
    /// Enabled engines, ONNX Runtime first.
    pub engines: Vec<Box<dyn Engine>>,
    /// What this machine is.
    pub facts: DeviceFacts,
}

impl Worker {
    /// Loads the catalogue and starts the enabled engines. Pinning (if configured) must already
    /// have happened: the core set reported is the one in force.
    pub fn build(cfg: &WorkerConfig) -> Result<Self, StartError> {
        let models = Models::load(&cfg.catalog)?;
        let arch = std::env::consts::ARCH;
        let library: PathBuf = match &cfg.engines.ort.library_path {
            Some(p) => p.clone(),
            None => models
                .catalog()
                .ort_library(arch)
                .ok_or_else(|| StartError::NoOrtLibrary(arch.into()))?,
        };
        let mut engines: Vec<Box<dyn Engine>> =
            vec![Box::new(OrtEngine::new(&library, cfg.engines.ort.clone())?)];
        if cfg.engines.tract.enabled {
            engines.push(Box::new(TractEngine::new()));
        }
        let core_set = cpu::allowed_cores()?;
        let device_class = if cfg.worker.device_class.is_empty() {
            cpu::default_device_class(core_set.len())
        } else {
            cfg.worker.device_class.clone()
        };
        Ok(Worker {
            models,
            engines,
            facts: DeviceFacts {
                worker: cfg.worker.id.clone(),
                device_class,
                arch: arch.into(),
                cpu_model: cpu::cpu_model(),
                core_set,
            },
        })
    }

    /// The engines as trait objects, for [`profile::run`].
    pub fn engine_refs(&self) -> Vec<&dyn Engine> {
        self.engines.iter().map(|e| e.as_ref()).collect()
    }
}
