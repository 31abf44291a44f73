//! Tensors as the services hold them: a name, a shape and typed, flat, row-major data.
//!
//! The wire carries tensors either as JSON arrays or as raw little-endian bytes (the binary
//! form); both decode into [`Tensor`] so engines and validation see one type.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ContractError;

/// Element types of the Open Inference Protocol that SynergAI carries.
///
/// `FP16`, `BF16` and `BYTES` exist in the protocol but none of the catalogue's models take
/// them; they are rejected at decode with a clear error rather than half-supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Datatype {
    #[serde(rename = "BOOL")]
    Bool,
    #[serde(rename = "UINT8")]
    Uint8,
    #[serde(rename = "UINT16")]
    Uint16,
    #[serde(rename = "UINT32")]
    Uint32,
    #[serde(rename = "UINT64")]
    Uint64,
    #[serde(rename = "INT8")]
    Int8,
    #[serde(rename = "INT16")]
    Int16,
    #[serde(rename = "INT32")]
    Int32,
    #[serde(rename = "INT64")]
    Int64,
    #[serde(rename = "FP32")]
    Fp32,
    #[serde(rename = "FP64")]
    Fp64,
}

impl Datatype {
    /// Every supported datatype, in protocol order.
    pub const ALL: [Datatype; 11] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp32,
        Datatype::Fp64,
    ];

    /// Bytes per element in the binary form.
    pub fn size(self) -> usize {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => 1,
            Datatype::Uint16 | Datatype::Int16 => 2,
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => 4,
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => 8,
        }
    }

    /// The protocol's name for this datatype (`"FP32"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
        }
    }

    /// Parses a protocol datatype name, naming the unsupported ones explicitly.
    pub fn parse(name: &str) -> Result<Self, ContractError> {
        Datatype::ALL
            .into_iter()
            .find(|d| d.as_str() == name)
            .ok_or_else(|| match name {
                "FP16" | "BF16" | "BYTES" => {
                    ContractError::BadRequest(format!("datatype {name} is not supported"))
                }
                other => ContractError::BadRequest(format!("unknown datatype {other:?}")),
            })
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Flat, row-major tensor data, typed.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum TensorData {
    Bool(Vec<bool>),
    Uint8(Vec<u8>),
    Uint16(Vec<u16>),
    Uint32(Vec<u32>),
    Uint64(Vec<u64>),
    Int8(Vec<i8>),
    Int16(Vec<i16>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Fp32(Vec<f32>),
    Fp64(Vec<f64>),
}

/// Runs `$body` with `$v` bound to the inner `Vec` of any [`TensorData`] variant.
#[macro_export]
macro_rules! with_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::Uint8($v) => $body,
            $crate::tensor::TensorData::Uint16($v) => $body,
            $crate::tensor::TensorData::Uint32($v) => $body,
            $crate::tensor::TensorData::Uint64($v) => $body,
            $crate::tensor::TensorData::Int8($v) => $body,
            $crate::tensor::TensorData::Int16($v) => $body,
            $crate::tensor::TensorData::Int32($v) => $body,
            $crate::tensor::TensorData::Int64($v) => $body,
            $crate::tensor::TensorData::Fp32($v) => $body,
            $crate::tensor::TensorData::Fp64($v) => $body,
        }
    };
}

/// A fixed-size element that has a little-endian byte form.
pub trait LeElement: Sized + Copy {
    /// The datatype this element belongs to.
    const DATATYPE: Datatype;
    /// Reads one element from exactly `Self::DATATYPE.size()` bytes.
    fn read_le(bytes: &[u8]) -> Self;
    /// Appends the element's bytes.
    fn write_le(self, out: &mut Vec<u8>);
}

macro_rules! le_element {
    ($($t:ty => $dt:ident),* $(,)?) => {$(
        impl LeElement for $t {
            const DATATYPE: Datatype = Datatype::$dt;
            fn read_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_element!(u8 => Uint8, u16 => Uint16, u32 => Uint32, u64 => Uint64, i8 => Int8, i16 => Int16,
    i32 => Int32, i64 => Int64, f32 => Fp32, f64 => Fp64);

impl LeElement for bool {
    const DATATYPE: Datatype = Datatype::Bool;
    fn read_le(bytes: &[u8]) -> Self {
        bytes[0] != 0
    }
    fn write_le(self, out: &mut Vec<u8>) {
        out.push(u8::from(self));
    }
}

fn read_all<T: LeElement>(bytes: &[u8]) -> Vec<T> {
    bytes
        .chunks_exact(T::DATATYPE.size())
        .map(T::read_le)
        .collect()
}

impl TensorData {
    /// The datatype of the elements.
    pub fn datatype(&self) -> Datatype {
        match self {
            TensorData::Bool(_) => Datatype::Bool,
            TensorData::Uint8(_) => Datatype::Uint8,
            TensorData::Uint16(_) => Datatype::Uint16,
            TensorData::Uint32(_) => Datatype::Uint32,
            TensorData::Uint64(_) => Datatype::Uint64,
            TensorData::Int8(_) => Datatype::Int8,
            TensorData::Int16(_) => Datatype::Int16,
            TensorData::Int32(_) => Datatype::Int32,
            TensorData::Int64(_) => Datatype::Int64,
            TensorData::Fp32(_) => Datatype::Fp32,
            TensorData::Fp64(_) => Datatype::Fp64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        with_tensor_data!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes raw little-endian bytes; the length must be a whole number of elements.
    pub fn from_le_bytes(datatype: Datatype, bytes: &[u8]) -> Result<Self, ContractError> {
        if !bytes.len().is_multiple_of(datatype.size()) {
            return Err(ContractError::BadRequest(format!(
                "{} bytes is not a whole number of {datatype} elements",
                bytes.len()
            )));
        }
        Ok(match datatype {
            Datatype::Bool => TensorData::Bool(read_all(bytes)),
            Datatype::Uint8 => TensorData::Uint8(bytes.to_vec()),
            Datatype::Uint16 => TensorData::Uint16(read_all(bytes)),
            Datatype::Uint32 => TensorData::Uint32(read_all(bytes)),
            Datatype::Uint64 => TensorData::Uint64(read_all(bytes)),
            Datatype::Int8 => TensorData::Int8(read_all(bytes)),
            Datatype::Int16 => TensorData::Int16(read_all(bytes)),
            Datatype::Int32 => TensorData::Int32(read_all(bytes)),
            Datatype::Int64 => TensorData::Int64(read_all(bytes)),
            Datatype::Fp32 => TensorData::Fp32(read_all(bytes)),
            Datatype::Fp64 => TensorData::Fp64(read_all(bytes)),
        })
    }

    /// Appends the raw little-endian bytes of every element.
    pub fn write_le_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(self.len() * self.datatype().size());
        with_tensor_data!(self, v => v.iter().for_each(|x| x.write_le(out)))
    }

    /// The size of the binary form in bytes.
    pub fn byte_len(&self) -> usize {
        self.len() * self.datatype().size()
    }
}

/// A named tensor with a shape and flat data whose length matches the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Input or output name, as in the model graph.
    pub name: String,
    /// Dimensions; the product equals `data.len()`.
    pub shape: Vec<usize>,
    /// Row-major elements.
    pub data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the data fills the shape exactly.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Self, ContractError> {
        let name = name.into();
        let expected = element_count(&shape)?;
        if expected != data.len() {
            return Err(ContractError::BadRequest(format!(
                "tensor {name:?}: shape {shape:?} holds {expected} elements but {} were given",
                data.len()
            )));
        }
        Ok(Tensor { name, shape, data })
    }

    /// The element type.
    pub fn datatype(&self) -> Datatype {
        self.data.datatype()
    }
}

/// The number of elements a shape holds, refusing shapes whose product overflows.
pub fn element_count(shape: &[usize]) -> Result<usize, ContractError> {
    shape.iter().try_fold(1usize, |acc, &d| {
        acc.checked_mul(d).ok_or_else(|| {
            ContractError::PayloadTooLarge(format!("shape {shape:?} overflows the element count"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn le_round_trip_for_every_datatype() {
        for dt in Datatype::ALL {
            let bytes: Vec<u8> = (0..dt.size() * 3).map(|i| (i * 37 % 251) as u8).collect();
            let bytes = if dt == Datatype::Bool {
                vec![1, 0, 1]
            } else {
                bytes
            };
            let data = TensorData::from_le_bytes(dt, &bytes).expect("decodes");
            assert_eq!(data.datatype(), dt);
            assert_eq!(data.len(), 3);
            let mut back = Vec::new();
            data.write_le_bytes(&mut back);
            assert_eq!(back, bytes, "{dt}");
        }
    }

    #[test]
    fn partial_elements_are_refused() {
        let err = TensorData::from_le_bytes(Datatype::Fp32, &[0; 7]).expect_err("7 bytes");
        assert_eq!(err.code(), crate::ErrorCode::BadRequest);
    }

    #[test]
    fn shape_overflow_is_refused() {
        let err = element_count(&[usize::MAX, 2]).expect_err("overflows");
        assert_eq!(err.code(), crate::ErrorCode::PayloadTooLarge);
    }

    #[test]
    fn tensor_new_checks_length() {
        assert!(Tensor::new("x", vec![2, 2], TensorData::Fp32(vec![0.0; 4])).is_ok());
        let err =
            Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 4])).expect_err("mismatch");
        assert!(err.to_string().contains("6 elements"), "{err}");
    }

    #[test]
    fn unsupported_datatypes_are_named() {
        assert_eq!(Datatype::parse("FP32").ok(), Some(Datatype::Fp32));
        let err = Datatype::parse("FP16").expect_err("unsupported");
        assert!(err.to_string().contains("FP16 is not supported"), "{err}");
        let err = Datatype::parse("FLOAT").expect_err("unknown");
        assert!(err.to_string().contains("unknown datatype"), "{err}");
    }
}

/// Builds the same [`TensorData`] variant from the inner `Vec` of `$data`.
macro_rules! map_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Uint8($v) => TensorData::Uint8($body),
            TensorData::Uint16($v) => TensorData::Uint16($body),
            TensorData::Uint32($v) => TensorData::Uint32($body),
            TensorData::Uint64($v) => TensorData::Uint64($body),
            TensorData::Int8($v) => TensorData::Int8($body),
            TensorData::Int16($v) => TensorData::Int16($body),
            TensorData::Int32($v) => TensorData::Int32($body),
            TensorData::Int64($v) => TensorData::Int64($body),
            TensorData::Fp32($v) => TensorData::Fp32($body),
            TensorData::Fp64($v) => TensorData::Fp64($body),
        }
    };
}

fn slice_rows<T: Clone>(
    v: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    start: usize,
    len: usize,
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = o * dim * inner;
        out.extend_from_slice(&v[base + start * inner..base + (start + len) * inner]);
    }
    out
}

impl Tensor {
    /// The `len` entries starting at `start` along `axis` (a batch's samples `start..start+len`).
    pub fn slice_axis(
        &self,
        axis: usize,
        start: usize,
        len: usize,
    ) -> Result<Tensor, ContractError> {
        let dim = *self.shape.get(axis).ok_or_else(|| {
            ContractError::BadRequest(format!("tensor {:?} has no axis {axis}", self.name))
        })?;
        if start.checked_add(len).is_none_or(|end| end > dim) {
            return Err(ContractError::BadRequest(format!(
                "tensor {:?}: rows {start}..{} outside axis {axis} of {dim}",
                self.name,
                start.saturating_add(len)
            )));
        }
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        let mut shape = self.shape.clone();
        shape[axis] = len;
        Ok(Tensor {
            name: self.name.clone(),
            shape,
            data: map_tensor_data!(&self.data, v => slice_rows(v, outer, dim, inner, start, len)),
        })
    }

    /// Joins tensors of one name and datatype along `axis`; every other dimension must agree.
    pub fn concat_axis(parts: &[&Tensor], axis: usize) -> Result<Tensor, ContractError> {
        let bad = |msg: String| ContractError::BadRequest(msg);
        let first = parts
            .first()
            .ok_or_else(|| bad("nothing to concatenate".into()))?;
        if axis >= first.shape.len() {
            return Err(bad(format!("tensor {:?} has no axis {axis}", first.name)));
        }
        let same_frame = |t: &Tensor| {
            t.datatype() == first.datatype()
                && t.shape.len() == first.shape.len()
                && t.shape
                    .iter()
                    .zip(&first.shape)
                    .enumerate()
                    .all(|(k, (a, b))| k == axis || a == b)
        };
        if !parts.iter().all(|t| same_frame(t)) {
            return Err(bad(format!(
                "tensors {:?} do not line up along axis {axis}",
                first.name
            )));
        }
        let outer: usize = first.shape[..axis].iter().product();
        let inner: usize = first.shape[axis + 1..].iter().product();
        let total: usize = parts.iter().map(|t| t.shape[axis]).sum();
        let mut shape = first.shape.clone();
        shape[axis] = total;
        macro_rules! join {
            ($variant:ident) => {{
                let mut out = Vec::with_capacity(outer * total * inner);
                for o in 0..outer {
                    for t in parts {
                        let TensorData::$variant(v) = &t.data else {
                            unreachable!("datatypes checked")
                        };
                        let rows = t.shape[axis] * inner;
                        out.extend_from_slice(&v[o * rows..(o + 1) * rows]);
                    }
                }
                TensorData::$variant(out)
            }};
        }
        let data = match &first.data {
            TensorData::Bool(_) => join!(Bool),
            TensorData::Uint8(_) => join!(Uint8),
            TensorData::Uint16(_) => join!(Uint16),
            TensorData::Uint32(_) => join!(Uint32),
            TensorData::Uint64(_) => join!(Uint64),
            TensorData::Int8(_) => join!(Int8),
            TensorData::Int16(_) => join!(Int16),
            TensorData::Int32(_) => join!(Int32),
            TensorData::Int64(_) => join!(Int64),
            TensorData::Fp32(_) => join!(Fp32),
            TensorData::Fp64(_) => join!(Fp64),
        };
        Ok(Tensor {
            name: first.name.clone(),
            shape,
            data,
        })
    }
}

#[cfg(test)]
mod axis_tests {
    use super::*;

    fn t(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product::<usize>();
        Tensor::new("x", shape, TensorData::Int32((0..n as i32).collect())).expect("consistent")
    }

    #[test]
    fn slicing_and_joining_along_any_axis_round_trips() {
        // [2, 3, 2]: axis 1 is the batch (like silero's state [2, batch, 128]).
        let x = t(vec![2, 3, 2]);
        let a = x.slice_axis(1, 0, 1).expect("in range");
        let b = x.slice_axis(1, 1, 2).expect("in range");
        assert_eq!(a.shape, [2, 1, 2]);
        assert_eq!(a.data, TensorData::Int32(vec![0, 1, 6, 7]));
        assert_eq!(b.data, TensorData::Int32(vec![2, 3, 4, 5, 8, 9, 10, 11]));
        assert_eq!(Tensor::concat_axis(&[&a, &b], 1).expect("lines up"), x);
        let rows = t(vec![4, 3]);
        let parts: Vec<Tensor> = (0..4)
            .map(|i| rows.slice_axis(0, i, 1).expect("row"))
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        assert_eq!(Tensor::concat_axis(&refs, 0).expect("lines up"), rows);
    }

    #[test]
    fn misfits_are_refused() {
        let x = t(vec![2, 3]);
        assert!(x.slice_axis(2, 0, 1).is_err());
        assert!(x.slice_axis(0, 1, 2).is_err());
        let y = t(vec![2, 4]);
        assert!(
            Tensor::concat_axis(&[&x, &y], 0).is_err(),
            "other dims differ"
        );
        assert!(Tensor::concat_axis(&[&x, &y], 1).is_ok());
        assert!(Tensor::concat_axis(&[], 0).is_err());
    }
}
