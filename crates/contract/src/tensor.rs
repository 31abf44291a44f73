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
