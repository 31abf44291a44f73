//! The model catalogue: which models exist, where their files are, what they take and give.
//!
//! `scripts/setup` writes `assets/catalog.json`; the worker loads models through it and the
//! intake validates requests against it. Paths in the file are relative to the file.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::ContractError;
use crate::subjects::ModelName;
use crate::tensor::{Datatype, Tensor, TensorData};

/// The catalogue format version this code reads.
pub const CATALOG_VERSION: u32 = 1;

/// Why a catalogue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file could not be read.
    #[error("cannot read model catalog {path}: {source} (run scripts/setup)")]
    Read {
        /// The catalogue path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid catalogue.
    #[error("model catalog {path} is invalid: {reason}")]
    Invalid {
        /// The catalogue path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The whole catalogue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Format version ([`CATALOG_VERSION`]).
    pub version: u32,
    /// What wrote it.
    pub generated_by: String,
    /// The ONNX Runtime library fetched for each architecture.
    pub onnxruntime: OrtAssets,
    /// The models.
    pub models: Vec<ModelEntry>,
    /// Folder the relative paths are resolved against.
    #[serde(skip)]
    pub root: PathBuf,
}

/// ONNX Runtime shared libraries fetched by setup.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrtAssets {
    /// ONNX Runtime version.
    pub version: String,
    /// Library per architecture (`x86_64`, `aarch64`).
    pub libraries: BTreeMap<String, LibraryAsset>,
}

/// One fetched shared library.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryAsset {
    /// Path relative to the catalogue.
    pub path: String,
    /// sha256 of the library file.
    pub sha256: String,
    /// Wheel it came from.
    pub wheel: String,
    /// sha256 of that wheel.
    pub wheel_sha256: String,
}

/// One model.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// Catalogue name.
    pub name: ModelName,
    /// What it does (`image-classification`, ...).
    pub task: String,
    /// ONNX file, relative to the catalogue.
    pub file: String,
    /// sha256 of the ONNX file.
    pub sha256: String,
    /// Whether the batch dimension is dynamic.
    pub dynamic_batch: bool,
    /// Largest batch allowed (`None`: unbounded).
    pub max_batch: Option<u32>,
    /// How the batch dimension was obtained and proven.
    pub batch_note: String,
    /// Inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
    /// Where the file came from.
    pub source: ModelSource,
}

/// The shape and type of one input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Graph name.
    pub name: String,
    /// Element type.
    pub datatype: Datatype,
    /// Served shape; `-1` at the batch axis of a dynamic-batch model.
    pub shape: Vec<i64>,
    /// Axis that holds the batch, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_axis: Option<usize>,
    /// The only values this input may hold (e.g. a sample rate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<f64>>,
}

/// Provenance of a model file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSource {
    /// PyPI package.
    pub package: String,
    /// Package version.
    pub version: String,
    /// Path inside the wheel.
    pub member: String,
    /// sha256 of the wheel.
    pub wheel_sha256: String,
    /// sha256 of the file as published, before any setup rewrite.
    pub member_sha256: String,
}

impl Catalog {
    /// Reads and checks a catalogue file.
    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
            path: path.to_owned(),
            source,
        })?;
        let invalid = |reason: String| CatalogError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let mut catalog: Catalog =
            serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        catalog.root = path.parent().unwrap_or(Path::new(".")).to_owned();
        catalog.check().map_err(invalid)?;
        Ok(catalog)
    }

    fn check(&self) -> Result<(), String> {
        if self.version != CATALOG_VERSION {
            return Err(format!(
                "version {} (this build reads {CATALOG_VERSION})",
                self.version
            ));
        }
        let mut seen = HashSet::new();
        for m in &self.models {
            if !seen.insert(m.name.as_str()) {
                return Err(format!("model {} listed twice", m.name));
            }
            m.check().map_err(|e| format!("model {}: {e}", m.name))?;
        }
        Ok(())
    }

    /// The entry for a model, or 404.
    pub fn model(&self, name: &str) -> Result<&ModelEntry, ContractError> {
        self.models
            .iter()
            .find(|m| m.name.as_str() == name)
            .ok_or_else(|| ContractError::UnknownModel(name.to_owned()))
    }

    /// Absolute path of a model's file.
    pub fn model_path(&self, model: &ModelEntry) -> PathBuf {
        self.root.join(&model.file)
    }

    /// The ONNX Runtime library fetched for an architecture, if any.
    pub fn ort_library(&self, arch: &str) -> Option<PathBuf> {
        self.onnxruntime
            .libraries
            .get(arch)
            .map(|l| self.root.join(&l.path))
    }
}

impl TensorSpec {
    fn check(&self, dynamic: bool) -> Result<(), String> {
        for (axis, &d) in self.shape.iter().enumerate() {
            let at_batch = self.batch_axis == Some(axis);
            let ok = if at_batch && dynamic { d == -1 } else { d >= 0 };
            if !ok {
                return Err(format!(
                    "{}: dimension {axis} is {d} in shape {:?}",
                    self.name, self.shape
                ));
            }
        }
        if let Some(axis) = self.batch_axis
            && axis >= self.shape.len()
        {
            return Err(format!("{}: batch axis {axis} out of range", self.name));
        }
        Ok(())
    }

    /// The concrete shape for a batch size.
    pub fn shape_for_batch(&self, batch: usize) -> Vec<usize> {
        self.shape
            .iter()
            .enumerate()
            .map(|(axis, &d)| {
                if self.batch_axis == Some(axis) {
                    batch
                } else {
                    usize::try_from(d).unwrap_or(0)
                }
            })
            .collect()
    }

    /// Checks a tensor against this spec; returns the tensor's batch size.
    pub fn check_tensor(&self, t: &Tensor, max_batch: Option<u32>) -> Result<usize, ContractError> {
        let bad = |msg: String| ContractError::BadRequest(format!("input {:?}: {msg}", self.name));
        if t.datatype() != self.datatype {
            return Err(bad(format!(
                "datatype {} but the model takes {}",
                t.datatype(),
                self.datatype
            )));
        }
        let batch = match self.batch_axis {
            Some(axis) if t.shape.len() == self.shape.len() => t.shape[axis],
            _ => 1,
        };
        if batch == 0 || max_batch.is_some_and(|m| batch > m as usize) {
            return Err(bad(format!(
                "batch {batch} is outside 1..={}",
                max_batch.map_or("any".into(), |m| m.to_string())
            )));
        }
        let expected = self.shape_for_batch(batch);
        if t.shape != expected {
            return Err(bad(format!(
                "shape {:?} but the model takes {}",
                t.shape,
                describe_shape(&self.shape)
            )));
        }
        if !all_finite(&t.data) {
            return Err(bad(
                "values must be finite numbers (no NaN or infinity)".into()
            ));
        }
        if let Some(values) = &self.values
            && !all_in(&t.data, values)
        {
            return Err(bad(format!("values must be one of {values:?}")));
        }
        Ok(batch)
    }
}

fn describe_shape(shape: &[i64]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|&d| if d < 0 { "batch".into() } else { d.to_string() })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Whether every floating-point element is finite; integer and boolean data always are.
fn all_finite(data: &TensorData) -> bool {
    match data {
        TensorData::Fp32(v) => v.iter().all(|x| x.is_finite()),
        TensorData::Fp64(v) => v.iter().all(|x| x.is_finite()),
        _ => true,
    }
}

fn all_in(data: &TensorData, allowed: &[f64]) -> bool {
    crate::with_tensor_data!(data, v => v.iter().all(|&x| {
        let x = as_f64(x);
        allowed.contains(&x)
    }))
}

fn as_f64<T: Into<Element>>(x: T) -> f64 {
    x.into().0
}

/// Any element, widened to f64 for comparison against catalogue values.
struct Element(f64);
macro_rules! element_from {
    ($($t:ty),*) => {$(impl From<$t> for Element { fn from(x: $t) -> Self { Element(x as f64) } })*};
}
element_from!(u8, u16, u32, u64, i8, i16, i32, i64, f32, f64);
impl From<bool> for Element {
    fn from(x: bool) -> Self {
        Element(f64::from(u8::from(x)))
    }
}

impl ModelEntry {
    fn check(&self) -> Result<(), String> {
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err("no inputs or no outputs".into());
        }
        if !self.dynamic_batch && self.max_batch != Some(1) {
            return Err("a model without a dynamic batch must have max_batch 1".into());
        }
        for spec in self.inputs.iter().chain(&self.outputs) {
            spec.check(self.dynamic_batch)?;
        }
        Ok(())
    }

    /// Largest batch this model may run, `None` for unbounded.
    pub fn max_batch(&self) -> Option<u32> {
        if self.dynamic_batch {
            self.max_batch
        } else {
            Some(1)
        }
    }

    /// Checks request inputs against the model and returns them in graph order with the batch
    /// size they share. Names must match exactly once each.
    pub fn check_inputs(&self, inputs: Vec<Tensor>) -> Result<(Vec<Tensor>, usize), ContractError> {
        let mut slots: Vec<Option<Tensor>> = vec![None; self.inputs.len()];
        for t in inputs {
            let Some(k) = self.inputs.iter().position(|s| s.name == t.name) else {
                let names: Vec<&str> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                return Err(ContractError::BadRequest(format!(
                    "model {} has no input {:?} (inputs: {names:?})",
                    self.name, t.name
                )));
            };
            if slots[k].is_some() {
                return Err(ContractError::BadRequest(format!(
                    "input {:?} given twice",
                    t.name
                )));
            }
            slots[k] = Some(t);
        }
        let mut batch: Option<usize> = None;
        let mut ordered = Vec::with_capacity(slots.len());
        for (spec, slot) in self.inputs.iter().zip(slots) {
            let t = slot.ok_or_else(|| {
                ContractError::BadRequest(format!("missing input {:?}", spec.name))
            })?;
            let b = spec.check_tensor(&t, self.max_batch())?;
            if spec.batch_axis.is_some() {
                match batch {
                    Some(prev) if prev != b => {
                        return Err(ContractError::BadRequest(format!(
                            "input {:?} has batch {b} but another input has batch {prev}",
                            spec.name
                        )));
                    }
                    _ => batch = Some(b),
                }
            }
            ordered.push(t);
        }
        Ok((ordered, batch.unwrap_or(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> ModelEntry {
        let json = r#"{
            "name": "vad", "task": "voice-activity", "file": "models/vad.onnx", "sha256": "00",
            "dynamic_batch": true, "max_batch": null, "batch_note": "n",
            "inputs": [
                {"name": "input", "datatype": "FP32", "shape": [-1, 4], "batch_axis": 0},
                {"name": "state", "datatype": "FP32", "shape": [2, -1, 3], "batch_axis": 1},
                {"name": "sr", "datatype": "INT64", "shape": [], "values": [16000]}
            ],
            "outputs": [{"name": "out", "datatype": "FP32", "shape": [-1, 1], "batch_axis": 0}],
            "source": {"package": "p", "version": "1", "member": "m", "wheel_sha256": "00", "member_sha256": "00"}
        }"#;
        let e: ModelEntry = serde_json::from_str(json).expect("parses");
        e.check().expect("valid");
        e
    }

    fn f32s(name: &str, shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(name, shape, TensorData::Fp32(vec![0.5; n])).expect("consistent")
    }

    fn sr(v: i64) -> Tensor {
        Tensor::new("sr", vec![], TensorData::Int64(vec![v])).expect("consistent")
    }

    #[test]
    fn inputs_are_ordered_and_batched() {
        let e = entry();
        let (ordered, batch) = e
            .check_inputs(vec![
                sr(16000),
                f32s("state", vec![2, 3, 3]),
                f32s("input", vec![3, 4]),
            ])
            .expect("valid");
        assert_eq!(batch, 3);
        let names: Vec<&str> = ordered.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["input", "state", "sr"]);
    }

    #[test]
    fn bad_inputs_are_named() {
        let e = entry();
        let cases = [
            (
                vec![f32s("input", vec![1, 4]), f32s("state", vec![2, 1, 3])],
                "missing input \"sr\"",
            ),
            (
                vec![
                    f32s("input", vec![1, 5]),
                    f32s("state", vec![2, 1, 3]),
                    sr(16000),
                ],
                "shape [1, 5] but the model takes [batch, 4]",
            ),
            (
                vec![
                    f32s("input", vec![2, 4]),
                    f32s("state", vec![2, 1, 3]),
                    sr(16000),
                ],
                "batch 1 but another input has batch 2",
            ),
            (
                vec![
                    f32s("input", vec![1, 4]),
                    f32s("state", vec![2, 1, 3]),
                    sr(8000),
                ],
                "values must be one of [16000.0]",
            ),
            (
                vec![
                    f32s("input", vec![1, 4]),
                    f32s("state", vec![2, 1, 3]),
                    f32s("sr", vec![]),
                ],
                "datatype FP32 but the model takes INT64",
            ),
            (vec![f32s("nope", vec![1])], "has no input \"nope\""),
            (
                vec![f32s("input", vec![1, 4]), f32s("input", vec![1, 4])],
                "given twice",
            ),
            (
                vec![
                    f32s("input", vec![0, 4]),
                    f32s("state", vec![2, 0, 3]),
                    sr(16000),
                ],
                "batch 0 is outside",
            ),
        ];
        for (inputs, want) in cases {
            let err = e.check_inputs(inputs).expect_err(want);
            assert!(err.to_string().contains(want), "{err} does not say {want}");
        }
    }

    #[test]
    fn non_finite_values_are_refused() {
        let e = entry();
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut data = vec![0.5; 4];
            data[2] = bad;
            let input =
                Tensor::new("input", vec![1, 4], TensorData::Fp32(data)).expect("consistent");
            let err = e
                .check_inputs(vec![input, f32s("state", vec![2, 1, 3]), sr(16000)])
                .expect_err("non-finite");
            assert_eq!(err.code(), crate::ErrorCode::BadRequest);
            assert!(err.to_string().contains("finite"), "{err}");
        }
    }

    #[test]
    fn fixed_batch_models_take_batch_one() {
        let mut e = entry();
        e.dynamic_batch = false;
        e.max_batch = Some(1);
        e.inputs[0].shape = vec![1, 4];
        e.inputs[1].shape = vec![2, 1, 3];
        e.outputs[0].shape = vec![1, 1];
        e.check().expect("valid");
        let err = e
            .check_inputs(vec![
                f32s("input", vec![2, 4]),
                f32s("state", vec![2, 2, 3]),
                sr(16000),
            ])
            .expect_err("batch 2");
        assert!(err.to_string().contains("outside 1..=1"), "{err}");
    }

    #[test]
    fn inconsistent_entries_are_refused() {
        let mut e = entry();
        e.inputs[0].shape = vec![4, -1];
        assert!(e.check().is_err());
        let mut e = entry();
        e.dynamic_batch = false;
        assert!(e.check().is_err(), "dynamic shape with dynamic_batch false");
    }
}
