//! The worker's view of the catalogue: verified model files and checked sessions.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use synergai_contract::Tensor;
use synergai_contract::catalog::{Catalog, CatalogError, ModelEntry};

use crate::engine::{Engine, EngineError, EngineKind, Session, SessionOptions};

/// The catalogue plus a record of which model files have been checked against it.
pub struct Models {
    catalog: Catalog,
    verified: Mutex<HashSet<String>>,
}

impl Models {
    /// Loads the catalogue at `path`.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        Ok(Models {
            catalog: Catalog::load(path)?,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// The catalogue.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The entry for `model`, or a 404-coded error.
    pub fn entry(&self, model: &str) -> Result<&ModelEntry, EngineError> {
        Ok(self.catalog.model(model)?)
    }

    /// The model's file, after checking once that it exists and matches the catalogue's sha256.
    pub fn verified_path(&self, entry: &ModelEntry) -> Result<PathBuf, EngineError> {
        let path = self.catalog.model_path(entry);
        let name = entry.name.to_string();
        if self.verified.lock().is_ok_and(|v| v.contains(&name)) {
            return Ok(path);
        }
        let actual = sha256_file(&path).map_err(|_| EngineError::ModelMissing {
            model: name.clone(),
            path: path.clone(),
        })?;
        if actual != entry.sha256 {
            return Err(EngineError::Checksum {
                model: name,
                path,
                expected: entry.sha256.clone(),
                actual,
            });
        }
        if let Ok(mut v) = self.verified.lock() {
            v.insert(name);
        }
        Ok(path)
    }

    /// Loads `model` on `engine` with `threads` intra-op threads.
    pub fn open(
        &self,
        engine: &dyn Engine,
        model: &str,
        threads: usize,
    ) -> Result<ModelSession, EngineError> {
        let entry = self.entry(model)?.clone();
        let path = self.verified_path(&entry)?;
        let inner = engine.load(&entry, &path, SessionOptions { threads })?;
        Ok(ModelSession {
            entry,
            engine: engine.kind(),
            threads,
            inner,
        })
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// A model loaded on an engine, with its inputs and outputs checked against the catalogue.
pub struct ModelSession {
    entry: ModelEntry,
    engine: EngineKind,
    threads: usize,
    inner: Box<dyn Session>,
}

impl ModelSession {
    /// The catalogue entry.
    pub fn entry(&self) -> &ModelEntry {
        &self.entry
    }

    /// The engine.
    pub fn engine(&self) -> EngineKind {
        self.engine
    }

    /// Intra-op threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Checks `inputs` against the catalogue (any order; see [`ModelEntry::check_inputs`]),
    /// then runs them. Returns the outputs and the batch size.
    pub fn run(&mut self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, usize), EngineError> {
        let (ordered, batch) = self.entry.check_inputs(inputs)?;
        Ok((self.run_checked(&ordered, batch)?, batch))
    }

    /// Runs inputs already in graph order and checked for `batch`; checks the outputs against
    /// the catalogue, since a catalogue that lies about shapes would mislead every client.
    pub fn run_checked(
        &mut self,
        inputs: &[Tensor],
        batch: usize,
    ) -> Result<Vec<Tensor>, EngineError> {
        let outputs = self.inner.run(inputs, batch)?;
        let mismatch = |reason: String| EngineError::CatalogMismatch {
            model: self.entry.name.to_string(),
            reason,
        };
        if outputs.len() != self.entry.outputs.len() {
            return Err(mismatch(format!(
                "{} outputs from the graph, {} in the catalog",
                outputs.len(),
                self.entry.outputs.len()
            )));
        }
        for (out, spec) in outputs.iter().zip(&self.entry.outputs) {
            let expected = spec.shape_for_batch(batch);
            if out.name != spec.name || out.datatype() != spec.datatype || out.shape != expected {
                return Err(mismatch(format!(
                    "output {} {} {:?} at batch {batch}, catalog says {} {} {expected:?}",
                    out.name,
                    out.datatype(),
                    out.shape,
                    spec.name,
                    spec.datatype
                )));
            }
        }
        Ok(outputs)
    }
}
