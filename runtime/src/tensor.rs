//! The tensor type that crosses the runtime boundary: an element type, a shape, and the
//! elements as little-endian bytes. Codecs (JSON, binary bodies) and engines both speak it,
//! so a request body becomes an engine input with at most one copy.

use std::fmt;

use bytes::Bytes;

/// Element types a served model may take or give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
    F16,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    Bool,
}

impl DType {
    pub const ALL: [DType; 12] = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::I64,
        DType::I32,
        DType::I16,
        DType::I8,
        DType::U8,
        DType::U16,
        DType::U32,
        DType::U64,
        DType::Bool,
    ];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Our short name, as manifests write it ("f32").
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }

    /// The Open Inference Protocol (KServe v2 / Triton) name ("FP32").
    pub fn v2_name(self) -> &'static str {
        match self {
            DType::F32 => "FP32",
            DType::F64 => "FP64",
            DType::F16 => "FP16",
            DType::I64 => "INT64",
            DType::I32 => "INT32",
            DType::I16 => "INT16",
            DType::I8 => "INT8",
            DType::U8 => "UINT8",
            DType::U16 => "UINT16",
            DType::U32 => "UINT32",
            DType::U64 => "UINT64",
            DType::Bool => "BOOL",
        }
    }

    /// Parses either naming ("f32", "float32" or "FP32").
    pub fn parse(text: &str) -> Option<DType> {
        let lower = text.to_ascii_lowercase();
        Some(match lower.as_str() {
            "f32" | "fp32" | "float32" | "float" => DType::F32,
            "f64" | "fp64" | "float64" | "double" => DType::F64,
            "f16" | "fp16" | "float16" | "half" => DType::F16,
            "i64" | "int64" => DType::I64,
            "i32" | "int32" => DType::I32,
            "i16" | "int16" => DType::I16,
            "i8" | "int8" => DType::I8,
            "u8" | "uint8" => DType::U8,
            "u16" | "uint16" => DType::U16,
            "u32" | "uint32" => DType::U32,
            "u64" | "uint64" => DType::U64,
            "bool" => DType::Bool,
            _ => return None,
        })
    }

    /// A stable one-byte code for binary encodings (the index in [`DType::ALL`]).
    pub fn code(self) -> u8 {
        // Invariant: every variant is in ALL, so the search always succeeds.
        DType::ALL.iter().position(|d| *d == self).unwrap_or(0) as u8
    }

    pub fn from_code(code: u8) -> Option<DType> {
        DType::ALL.get(usize::from(code)).copied()
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why bytes and a shape do not make a tensor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("shape {shape:?} has too many elements")]
    Overflow { shape: Vec<usize> },
    #[error("shape {shape:?} of {dtype} needs {expected} bytes of data, got {got}")]
    Length {
        dtype: DType,
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },
}

/// A dense, row-major tensor whose elements are stored little-endian. The bytes are shared
/// (`Bytes`): a tensor cut from a request body, or a row range of a batch output, is a view,
/// not a copy.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Bytes,
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({} {:?}, {} bytes)",
            self.dtype,
            self.shape,
            self.data.len()
        )
    }
}

/// The number of elements of `shape`, or `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

impl Tensor {
    /// Builds a tensor from raw little-endian bytes, checking that their length fits the shape.
    pub fn from_bytes(
        dtype: DType,
        shape: Vec<usize>,
        data: impl Into<Bytes>,
    ) -> Result<Tensor, TensorError> {
        let data: Bytes = data.into();
        let expected = element_count(&shape)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| TensorError::Overflow {
                shape: shape.clone(),
            })?;
        if expected != data.len() {
            return Err(TensorError::Length {
                dtype,
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor { dtype, shape, data })
    }

    pub fn from_f32(shape: Vec<usize>, values: &[f32]) -> Result<Tensor, TensorError> {
        let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::from_bytes(DType::F32, shape, data)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    pub fn into_bytes(self) -> Bytes {
        self.data
    }

    pub fn len(&self) -> usize {
        self.data.len() / self.dtype.size()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The elements as f32 when the tensor holds f32.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        (self.dtype == DType::F32).then(|| {
            self.data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }

    /// Bytes in one row along axis 0 (the batch axis).
    pub fn row_bytes(&self) -> usize {
        element_count(self.shape.get(1..).unwrap_or(&[])).unwrap_or(0) * self.dtype.size()
    }

    /// Stacks tensors along axis 0. All must share the element type and the shape past axis 0.
    pub fn concat_rows(parts: &[Tensor]) -> Option<Tensor> {
        let first = parts.first()?;
        if first.shape.is_empty() {
            return None;
        }
        let mut rows = 0usize;
        let mut data = Vec::with_capacity(parts.iter().map(|p| p.data.len()).sum());
        for p in parts {
            if p.dtype != first.dtype
                || p.shape.len() != first.shape.len()
                || p.shape[1..] != first.shape[1..]
            {
                return None;
            }
            rows += p.shape[0];
            data.extend_from_slice(&p.data);
        }
        let mut shape = first.shape.clone();
        shape[0] = rows;
        Some(Tensor {
            dtype: first.dtype,
            shape,
            data: data.into(),
        })
    }

    /// Rows `start..start + count` along axis 0, as a new tensor.
    pub fn slice_rows(&self, start: usize, count: usize) -> Option<Tensor> {
        let rows = *self.shape.first()?;
        if start.checked_add(count)? > rows {
            return None;
        }
        let row = self.row_bytes();
        let mut shape = self.shape.clone();
        shape[0] = count;
        Some(Tensor {
            dtype: self.dtype,
            shape,
            data: self.data.slice(start * row..(start + count) * row),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn length_must_fit_the_shape() {
        assert!(matches!(
            Tensor::from_bytes(DType::F32, vec![2, 3], vec![0; 23]),
            Err(TensorError::Length {
                expected: 24,
                got: 23,
                ..
            })
        ));
        assert!(matches!(
            Tensor::from_bytes(DType::F32, vec![usize::MAX, 3], vec![]),
            Err(TensorError::Overflow { .. })
        ));
    }

    #[test]
    fn dtype_codes_and_names_round_trip() {
        for d in DType::ALL {
            assert_eq!(DType::from_code(d.code()), Some(d));
            assert_eq!(DType::parse(d.name()), Some(d));
            assert_eq!(DType::parse(d.v2_name()), Some(d));
        }
        assert_eq!(DType::from_code(200), None);
    }

    proptest! {
        /// Concatenating row slices gives the original back.
        #[test]
        fn slices_concat_to_the_whole(rows in 1usize..8, width in 0usize..5, cut in 0usize..8) {
            let n = rows * width;
            let values: Vec<f32> = (0..n).map(|i| i as f32).collect();
            let t = Tensor::from_f32(vec![rows, width], &values).unwrap();
            let cut = cut.min(rows);
            let a = t.slice_rows(0, cut).unwrap();
            let b = t.slice_rows(cut, rows - cut).unwrap();
            prop_assert_eq!(Tensor::concat_rows(&[a, b]).unwrap(), t);
        }
    }
}
