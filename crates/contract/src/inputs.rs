//! Random inputs for a model: what profiling and the engine tests feed the models.

use crate::catalog::{ModelEntry, TensorSpec};
use crate::{Datatype, Tensor, TensorData};
use rand::{Rng, RngExt};

/// Random inputs for `model` at `batch`, in graph order. Floats are uniform in [0, 1), like a
/// normalised image or audio frame; inputs restricted to fixed values take one of them.
pub fn random_inputs(model: &ModelEntry, batch: usize, rng: &mut impl Rng) -> Vec<Tensor> {
    model
        .inputs
        .iter()
        .map(|spec| random_tensor(spec, batch, rng))
        .collect()
}

fn random_tensor(spec: &TensorSpec, batch: usize, rng: &mut impl Rng) -> Tensor {
    let shape = spec.shape_for_batch(batch);
    let n: usize = shape.iter().product();
    let float = matches!(spec.datatype, Datatype::Fp32 | Datatype::Fp64);
    let values: Vec<f64> = (0..n)
        .map(|_| match spec.values.as_deref() {
            Some(allowed) if !allowed.is_empty() => allowed[rng.random_range(0..allowed.len())],
            _ if float => rng.random::<f64>(),
            _ => f64::from(rng.random_range(0u8..10)),
        })
        .collect();
    let data = match spec.datatype {
        Datatype::Bool => TensorData::Bool(values.iter().map(|&v| v != 0.0).collect()),
        Datatype::Uint8 => TensorData::Uint8(values.iter().map(|&v| v as u8).collect()),
        Datatype::Uint16 => TensorData::Uint16(values.iter().map(|&v| v as u16).collect()),
        Datatype::Uint32 => TensorData::Uint32(values.iter().map(|&v| v as u32).collect()),
        Datatype::Uint64 => TensorData::Uint64(values.iter().map(|&v| v as u64).collect()),
        Datatype::Int8 => TensorData::Int8(values.iter().map(|&v| v as i8).collect()),
        Datatype::Int16 => TensorData::Int16(values.iter().map(|&v| v as i16).collect()),
        Datatype::Int32 => TensorData::Int32(values.iter().map(|&v| v as i32).collect()),
        Datatype::Int64 => TensorData::Int64(values.iter().map(|&v| v as i64).collect()),
        Datatype::Fp32 => TensorData::Fp32(values.iter().map(|&v| v as f32).collect()),
        Datatype::Fp64 => TensorData::Fp64(values),
    };
    Tensor {
        name: spec.name.clone(),
        shape,
        data,
    }
}
