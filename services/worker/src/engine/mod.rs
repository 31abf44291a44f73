//! Inference engines behind one small trait.
//!
//! An [`Engine`] loads a catalogue model into a [`Session`] for a number of intra-op threads;
//! a session runs batches on the calling thread and is used by one thread at a time
//! (`ort::Session::run` takes `&mut self`), so the worker keeps one session per execution
//! thread instead of sharing one behind a lock.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use synergai_contract::catalog::ModelEntry;
use synergai_contract::{ContractError, ErrorCode, Tensor};

pub mod ort;
pub mod tract;

/// The engines a worker can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ONNX Runtime, through the `ort` crate and a dynamically loaded library.
    Ort,
    /// tract, a pure-Rust engine common on ARM edge devices.
    Tract,
}

impl EngineKind {
    /// Every engine.
    pub const ALL: [EngineKind; 2] = [EngineKind::Ort, EngineKind::Tract];

    /// Short name (`ort`, `tract`).
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Ort => "ort",
            EngineKind::Tract => "tract",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EngineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        EngineKind::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| format!("unknown engine {s:?} (engines: ort, tract)"))
    }
}

/// Why an engine could not load or run a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The ONNX Runtime shared library is not where configuration says.
    #[error(
        "ONNX Runtime library not found at {0}: run scripts/setup, or set engines.ort.library_path (SYNERGAI_ENGINES__ORT__LIBRARY_PATH)"
    )]
    LibraryMissing(PathBuf),
    /// The library exists but could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    LibraryLoad {
        /// Library path.
        path: PathBuf,
        /// Loader's reason.
        reason: String,
    },
    /// A model file is missing.
    #[error("model {model}: file {path} is missing (run scripts/setup)")]
    ModelMissing {
        /// Model name.
        model: String,
        /// Expected path.
        path: PathBuf,
    },
    /// A model file does not match the catalogue's checksum.
    #[error(
        "model {model}: file {path} is corrupt or was replaced: sha256 {actual}, catalog says {expected} (rerun scripts/setup --force)"
    )]
    Checksum {
        /// Model name.
        model: String,
        /// File path.
        path: PathBuf,
        /// Catalogue's sha256.
        expected: String,
        /// File's sha256.
        actual: String,
    },
    /// The engine rejected the model file.
    #[error("{engine} cannot load model {model}: {reason}")]
    Load {
        /// Engine.
        engine: EngineKind,
        /// Model name.
        model: String,
        /// Engine's reason.
        reason: String,
    },
    /// The engine lacks an operator or feature the model needs.
    #[error("unsupported by {engine}: {reason}")]
    Unsupported {
        /// Engine.
        engine: EngineKind,
        /// What is missing.
        reason: String,
    },
    /// The catalogue entry disagrees with the model graph.
    #[error("model {model}: the catalog disagrees with the graph: {reason}")]
    CatalogMismatch {
        /// Model name.
        model: String,
        /// The disagreement.
        reason: String,
    },
    /// The inputs do not fit the model.
    #[error(transparent)]
    Input(#[from] ContractError),
    /// The engine failed while running.
    #[error("{engine} failed running {model}: {reason}")]
    Run {
        /// Engine.
        engine: EngineKind,
        /// Model name.
        model: String,
        /// Engine's reason.
        reason: String,
    },
}

impl EngineError {
    /// The reply code this error maps to.
    pub fn code(&self) -> ErrorCode {
        match self {
            EngineError::Input(e) => e.code(),
            _ => ErrorCode::Internal,
        }
    }
}

/// Settings of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionOptions {
    /// Intra-op threads (threads cooperating on one operator).
    pub threads: usize,
}

/// An engine: loads models into sessions.
pub trait Engine: Send + Sync {
    /// Which engine this is.
    fn kind(&self) -> EngineKind;
    /// Engine crate and version, e.g. `ort 2.0.0-rc.15`.
    fn engine_version(&self) -> String;
    /// Version of the library doing the work, e.g. `onnxruntime 1.31.1`.
    fn library_version(&self) -> String;
    /// Loads `model` from `path` (already checksum-verified).
    fn load(
        &self,
        model: &ModelEntry,
        path: &std::path::Path,
        options: SessionOptions,
    ) -> Result<Box<dyn Session>, EngineError>;
}

/// A loaded model, ready to run batches on the calling thread.
pub trait Session: Send {
    /// Runs one batch. `inputs` are in graph order and already checked against the catalogue;
    /// outputs come back in graph order.
    fn run(&mut self, inputs: &[Tensor], batch: usize) -> Result<Vec<Tensor>, EngineError>;
}
