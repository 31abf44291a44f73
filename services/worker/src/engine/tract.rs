//! tract: a pure-Rust ONNX engine, common on ARM edge devices.
//!
//! tract optimises best for concrete shapes, so a session compiles one plan per batch size on
//! first use (the profiler's warm-up absorbs it; a server can call [`Session::run`] once per
//! batch size at start-up). Intra-op threads come from a rayon pool per thread count, shared by
//! every session of this engine.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use synergai_contract::catalog::ModelEntry;
use synergai_contract::{Datatype, Tensor, TensorData, with_tensor_data};
use tract_linalg::multithread::Executor;
use tract_onnx::prelude::{
    DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoTValue, RunOptions,
    TValue, TVec, Tensor as TractTensor, TypedRunnableModel, TypedSimpleState,
};

use super::{Engine, EngineError, EngineKind, Session, SessionOptions};

/// Version of tract this worker is built with (checked against Cargo.lock in tests).
pub const TRACT_VERSION: &str = "0.23.9";

/// The tract engine.
#[derive(Default)]
pub struct TractEngine {
    pools: Mutex<HashMap<usize, Executor>>,
}

impl TractEngine {
    /// A tract engine with no thread pools yet.
    pub fn new() -> Self {
        TractEngine::default()
    }

    fn executor(&self, threads: usize) -> Option<Executor> {
        if threads <= 1 {
            return None;
        }
        let mut pools = self.pools.lock().ok()?;
        Some(
            pools
                .entry(threads)
                .or_insert_with(|| Executor::multithread_with_name(threads, "tract"))
                .clone(),
        )
    }
}

fn datum_type(dt: Datatype) -> DatumType {
    match dt {
        Datatype::Bool => DatumType::Bool,
        Datatype::Uint8 => DatumType::U8,
        Datatype::Uint16 => DatumType::U16,
        Datatype::Uint32 => DatumType::U32,
        Datatype::Uint64 => DatumType::U64,
        Datatype::Int8 => DatumType::I8,
        Datatype::Int16 => DatumType::I16,
        Datatype::Int32 => DatumType::I32,
        Datatype::Int64 => DatumType::I64,
        Datatype::Fp32 => DatumType::F32,
        Datatype::Fp64 => DatumType::F64,
    }
}

/// The whole chain of a tract error on one line: its outer context alone rarely names the
/// operator at fault.
fn reason(e: &tract_onnx::prelude::TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

impl Engine for TractEngine {
    fn kind(&self) -> EngineKind {
        EngineKind::Tract
    }

    fn engine_version(&self) -> String {
        format!("tract {TRACT_VERSION}")
    }

    fn library_version(&self) -> String {
        format!("tract {TRACT_VERSION}")
    }

    fn load(
        &self,
        model: &ModelEntry,
        path: &Path,
        options: SessionOptions,
    ) -> Result<Box<dyn Session>, EngineError> {
        // The file already matched the catalogue's checksum and loads on ONNX Runtime, so
        // anything tract refuses from here on is tract's limit, not a bad file.
        let unsupported = |e: tract_onnx::prelude::TractError| EngineError::Unsupported {
            engine: EngineKind::Tract,
            reason: reason(&e),
        };
        let inference = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(unsupported)?;
        let mut session = TractSession {
            model: model.clone(),
            inference,
            executor: self.executor(options.threads),
            plans: HashMap::new(),
        };
        session.plan(1).map_err(unsupported)?;
        Ok(Box::new(session))
    }
}

struct TractSession {
    model: ModelEntry,
    inference: InferenceModel,
    executor: Option<Executor>,
    plans: HashMap<usize, TypedSimpleState>,
}

impl TractSession {
    fn plan(&mut self, batch: usize) -> tract_onnx::prelude::TractResult<&mut TypedSimpleState> {
        if !self.plans.contains_key(&batch) {
            let mut model = self.inference.clone();
            for (k, spec) in self.model.inputs.iter().enumerate() {
                let shape = spec.shape_for_batch(batch);
                let fact = match spec.values.as_deref() {
                    // An input that may take one value only (a sample rate) is a constant:
                    // telling tract lets it resolve branches on it at compile time.
                    Some([only]) => {
                        let t = constant(spec.datatype, &shape, *only)?;
                        InferenceFact::from(t)
                    }
                    _ => InferenceFact::dt_shape(datum_type(spec.datatype), shape),
                };
                model = model.with_input_fact(k, fact)?;
            }
            let options = RunOptions {
                executor: self.executor.clone(),
                ..RunOptions::default()
            };
            let plan: Arc<TypedRunnableModel> = model
                .into_optimized()?
                .into_runnable_with_options(&options)?;
            self.plans.insert(batch, plan.spawn()?);
        }
        self.plans
            .get_mut(&batch)
            .ok_or_else(|| tract_onnx::prelude::TractError::msg("plan vanished"))
    }
}

fn constant(
    dt: Datatype,
    shape: &[usize],
    value: f64,
) -> tract_onnx::prelude::TractResult<TractTensor> {
    let n: usize = shape.iter().product();
    match dt {
        Datatype::Int64 => TractTensor::from_shape(shape, &vec![value as i64; n]),
        Datatype::Int32 => TractTensor::from_shape(shape, &vec![value as i32; n]),
        Datatype::Fp32 => TractTensor::from_shape(shape, &vec![value as f32; n]),
        Datatype::Fp64 => TractTensor::from_shape(shape, &vec![value; n]),
        other => Err(tract_onnx::prelude::TractError::msg(format!(
            "constant inputs of type {other} are not supported"
        ))),
    }
}

fn to_tract(t: &Tensor) -> tract_onnx::prelude::TractResult<TValue> {
    with_tensor_data!(&t.data, v => TractTensor::from_shape(&t.shape, v.as_slice()).map(IntoTValue::into_tvalue))
}

fn from_tract(name: &str, t: &TractTensor) -> Result<Tensor, String> {
    macro_rules! take {
        ($ty:ty, $variant:ident) => {
            TensorData::$variant(
                t.to_plain_array_view::<$ty>()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .copied()
                    .collect(),
            )
        };
    }
    let data = match t.datum_type() {
        DatumType::Bool => take!(bool, Bool),
        DatumType::U8 => take!(u8, Uint8),
        DatumType::U16 => take!(u16, Uint16),
        DatumType::U32 => take!(u32, Uint32),
        DatumType::U64 => take!(u64, Uint64),
        DatumType::I8 => take!(i8, Int8),
        DatumType::I16 => take!(i16, Int16),
        DatumType::I32 => take!(i32, Int32),
        DatumType::I64 => take!(i64, Int64),
        DatumType::F32 => take!(f32, Fp32),
        DatumType::F64 => take!(f64, Fp64),
        other => return Err(format!("output {name} has unsupported type {other:?}")),
    };
    Tensor::new(name, t.shape().to_vec(), data).map_err(|e| e.to_string())
}

impl Session for TractSession {
    fn run(&mut self, inputs: &[Tensor], batch: usize) -> Result<Vec<Tensor>, EngineError> {
        let model = self.model.name.to_string();
        let run_err = |reason: String| EngineError::Run {
            engine: EngineKind::Tract,
            model: model.clone(),
            reason,
        };
        let values: TVec<TValue> = inputs
            .iter()
            .map(to_tract)
            .collect::<Result<_, _>>()
            .map_err(|e| run_err(reason(&e)))?;
        let names: Vec<String> = self.model.outputs.iter().map(|o| o.name.clone()).collect();
        let state = self.plan(batch).map_err(|e| run_err(reason(&e)))?;
        let outputs = state.run(values).map_err(|e| run_err(reason(&e)))?;
        if outputs.len() != names.len() {
            return Err(run_err(format!(
                "{} outputs, catalog lists {}",
                outputs.len(),
                names.len()
            )));
        }
        outputs
            .iter()
            .zip(&names)
            .map(|(t, name)| from_tract(name, t))
            .collect::<Result<Vec<_>, _>>()
            .map_err(run_err)
    }
}
