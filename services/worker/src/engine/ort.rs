//! ONNX Runtime through `ort` 2.0 with `load-dynamic`: the shared library is loaded at run time
//! from a configured path (by default the one `scripts/setup` fetched for this architecture).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session as OrtSession, SessionInputValue};
use ort::value::{TensorElementType, TensorRef, ValueType};
use serde::{Deserialize, Serialize};
use synergai_contract::catalog::{ModelEntry, TensorSpec};
use synergai_contract::{Datatype, Tensor, TensorData, with_tensor_data};

use super::{Engine, EngineError, EngineKind, Session, SessionOptions};

/// Version of the `ort` crate this worker is built with (checked against Cargo.lock in tests).
pub const ORT_CRATE_VERSION: &str = "2.0.0-rc.15";

/// Graph optimisation level (ONNX Runtime's `GraphOptimizationLevel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OptimizationLevel {
    /// No graph optimisation.
    Disable,
    /// Constant folding and redundant node elimination.
    Basic,
    /// Plus complex node fusions.
    Extended,
    /// Plus layout optimisations (ONNX Runtime's default).
    #[default]
    All,
}

impl From<OptimizationLevel> for GraphOptimizationLevel {
    fn from(level: OptimizationLevel) -> Self {
        match level {
            OptimizationLevel::Disable => GraphOptimizationLevel::Disable,
            OptimizationLevel::Basic => GraphOptimizationLevel::Level1,
            OptimizationLevel::Extended => GraphOptimizationLevel::Level2,
            OptimizationLevel::All => GraphOptimizationLevel::All,
        }
    }
}

/// ONNX Runtime settings (`[engines.ort]`, `SYNERGAI_ENGINES__ORT__*`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrtConfig {
    /// Path of `libonnxruntime.so`; empty means the catalogue's library for this architecture.
    pub library_path: Option<PathBuf>,
    /// Inter-op threads (parallel branches of the graph).
    pub inter_threads: usize,
    /// Graph optimisation level.
    pub optimization_level: OptimizationLevel,
    /// Let idle intra-op threads spin for work (ONNX Runtime's default) instead of sleeping.
    pub allow_spinning: bool,
}

impl Default for OrtConfig {
    fn default() -> Self {
        OrtConfig {
            library_path: None,
            inter_threads: 1,
            optimization_level: OptimizationLevel::All,
            allow_spinning: true,
        }
    }
}

/// ONNX Runtime allows one environment per process, bound to the library it was loaded from.
static ENVIRONMENT: Mutex<Option<(PathBuf, Arc<Environment>)>> = Mutex::new(None);

fn environment(path: &Path) -> Result<Arc<Environment>, EngineError> {
    if !path.is_file() {
        return Err(EngineError::LibraryMissing(path.to_owned()));
    }
    let load_err = |reason: String| EngineError::LibraryLoad {
        path: path.to_owned(),
        reason,
    };
    let mut slot = ENVIRONMENT
        .lock()
        .map_err(|_| load_err("environment lock poisoned".into()))?;
    if let Some((loaded, env)) = slot.as_ref() {
        return if loaded == path {
            Ok(env.clone())
        } else {
            Err(load_err(format!(
                "this process already loaded ONNX Runtime from {}",
                loaded.display()
            )))
        };
    }
    let env = ort::init_from(path)
        .map_err(|e| load_err(e.to_string()))?
        .with_name("synergai")
        .build()
        .map_err(|e| load_err(e.to_string()))?;
    let env = Arc::new(env);
    *slot = Some((path.to_owned(), env.clone()));
    Ok(env)
}

/// The ONNX Runtime engine.
pub struct OrtEngine {
    env: Arc<Environment>,
    config: OrtConfig,
    version: String,
}

impl OrtEngine {
    /// Loads the ONNX Runtime library at `library` (once per process).
    pub fn new(library: &Path, config: OrtConfig) -> Result<Self, EngineError> {
        let env = environment(library)?;
        let version = read_library_version(library)
            .map(|v| format!("onnxruntime {v}"))
            .unwrap_or_else(|| "onnxruntime (version unknown)".into());
        Ok(OrtEngine {
            env,
            config,
            version,
        })
    }
}

fn datatype_of(ty: TensorElementType) -> Option<Datatype> {
    Some(match ty {
        TensorElementType::Bool => Datatype::Bool,
        TensorElementType::Uint8 => Datatype::Uint8,
        TensorElementType::Uint16 => Datatype::Uint16,
        TensorElementType::Uint32 => Datatype::Uint32,
        TensorElementType::Uint64 => Datatype::Uint64,
        TensorElementType::Int8 => Datatype::Int8,
        TensorElementType::Int16 => Datatype::Int16,
        TensorElementType::Int32 => Datatype::Int32,
        TensorElementType::Int64 => Datatype::Int64,
        TensorElementType::Float32 => Datatype::Fp32,
        TensorElementType::Float64 => Datatype::Fp64,
        _ => return None,
    })
}

/// Checks the catalogue's input specs against what the graph declares.
fn check_inputs(model: &ModelEntry, session: &OrtSession) -> Result<(), EngineError> {
    let mismatch = |reason: String| EngineError::CatalogMismatch {
        model: model.name.to_string(),
        reason,
    };
    let graph: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
    let listed: Vec<&str> = model.inputs.iter().map(|s| s.name.as_str()).collect();
    if graph != listed {
        return Err(mismatch(format!(
            "catalog lists inputs {listed:?}, the graph takes {graph:?}"
        )));
    }
    for (outlet, spec) in session.inputs().iter().zip(&model.inputs) {
        let ValueType::Tensor { ty, shape, .. } = outlet.dtype() else {
            return Err(mismatch(format!("input {} is not a tensor", spec.name)));
        };
        if datatype_of(*ty) != Some(spec.datatype) {
            return Err(mismatch(format!(
                "input {} is {ty:?} in the graph, {} in the catalog",
                spec.name, spec.datatype
            )));
        }
        check_dims(spec, shape).map_err(mismatch)?;
    }
    Ok(())
}

fn check_dims(spec: &TensorSpec, graph: &[i64]) -> Result<(), String> {
    // A graph dimension below zero is dynamic and takes anything; a fixed one must equal the
    // catalogue's, so a dynamic batch in the catalogue (-1) needs a dynamic graph dimension.
    let fits = graph.len() == spec.shape.len()
        && graph
            .iter()
            .zip(&spec.shape)
            .all(|(&g, &c)| g < 0 || g == c);
    if fits {
        Ok(())
    } else {
        Err(format!(
            "input {} has shape {:?} in the catalog but {graph:?} in the graph",
            spec.name, spec.shape
        ))
    }
}

impl Engine for OrtEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Ort
    }

    fn engine_version(&self) -> String {
        format!("ort {ORT_CRATE_VERSION}")
    }

    fn library_version(&self) -> String {
        self.version.clone()
    }

    fn load(
        &self,
        model: &ModelEntry,
        path: &Path,
        options: SessionOptions,
    ) -> Result<Box<dyn Session>, EngineError> {
        let load_err = |reason: String| EngineError::Load {
            engine: EngineKind::Ort,
            model: model.name.to_string(),
            reason,
        };
        let builder_err =
            |e: ort::Error<ort::session::builder::SessionBuilder>| load_err(e.to_string());
        let session = OrtSession::builder(&self.env)
            .map_err(|e| load_err(e.to_string()))?
            .with_intra_threads(options.threads)
            .map_err(builder_err)?
            .with_inter_threads(self.config.inter_threads)
            .map_err(builder_err)?
            .with_optimization_level(self.config.optimization_level.into())
            .map_err(builder_err)?
            .with_intra_op_spinning(self.config.allow_spinning)
            .map_err(builder_err)?
            .commit_from_file(path)
            .map_err(|e| load_err(e.to_string()))?;
        check_inputs(model, &session)?;
        Ok(Box::new(OrtModelSession {
            session,
            model: model.name.to_string(),
        }))
    }
}

/// The version the library reports (`OrtGetApiBase()->GetVersionString()`); its build
/// information string carries no version.
#[allow(unsafe_code)]
fn read_library_version(path: &Path) -> Option<String> {
    // SAFETY: `ort::init_from` already loaded this library and checked its API version, so it
    // exports `OrtGetApiBase` with the C signature ort-sys declares. The version string is a
    // static, null-terminated buffer owned by the library; it is copied before our handle is
    // dropped, and ort's own handle keeps the library loaded for the life of the process.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get: libloading::Symbol<'_, unsafe extern "C" fn() -> *const ort::sys::OrtApiBase> =
            lib.get(b"OrtGetApiBase").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let text = ((*base).GetVersionString)();
        if text.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr(text)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

struct OrtModelSession {
    session: OrtSession,
    model: String,
}

fn input_value(t: &Tensor) -> ort::Result<SessionInputValue<'_>> {
    let shape: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
    with_tensor_data!(&t.data, v => TensorRef::from_array_view((shape, v.as_slice())).map(SessionInputValue::from))
}

fn output_tensor(name: &str, value: &ort::value::DynValue) -> Result<Tensor, String> {
    let ValueType::Tensor { ty, .. } = value.dtype() else {
        return Err(format!("output {name} is not a tensor"));
    };
    macro_rules! extract {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = value
                .try_extract_tensor::<$t>()
                .map_err(|e| e.to_string())?;
            let shape = shape.iter().map(|&d| d as usize).collect();
            (shape, TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => extract!(bool, Bool),
        TensorElementType::Uint8 => extract!(u8, Uint8),
        TensorElementType::Uint16 => extract!(u16, Uint16),
        TensorElementType::Uint32 => extract!(u32, Uint32),
        TensorElementType::Uint64 => extract!(u64, Uint64),
        TensorElementType::Int8 => extract!(i8, Int8),
        TensorElementType::Int16 => extract!(i16, Int16),
        TensorElementType::Int32 => extract!(i32, Int32),
        TensorElementType::Int64 => extract!(i64, Int64),
        TensorElementType::Float32 => extract!(f32, Fp32),
        TensorElementType::Float64 => extract!(f64, Fp64),
        other => return Err(format!("output {name} has unsupported type {other:?}")),
    };
    Tensor::new(name, shape, data).map_err(|e| e.to_string())
}

impl Session for OrtModelSession {
    fn run(&mut self, inputs: &[Tensor], _batch: usize) -> Result<Vec<Tensor>, EngineError> {
        let run_err = |reason: String| EngineError::Run {
            engine: EngineKind::Ort,
            model: self.model.clone(),
            reason,
        };
        let values = inputs
            .iter()
            .map(input_value)
            .collect::<ort::Result<Vec<_>>>()
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .run(values.as_slice())
            .map_err(|e| run_err(e.to_string()))?;
        outputs
            .iter()
            .map(|(name, value)| output_tensor(name, &value))
            .collect::<Result<Vec<_>, _>>()
            .map_err(run_err)
    }
}
