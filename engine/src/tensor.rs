//! Element types and typed tensor storage: what constants hold and what a run takes and gives.

use std::fmt;

/// Element types the engine computes with. Half floats exist only in files: readers widen
/// them to f32 when they load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I8,
    U8,
    I16,
    I32,
    I64,
    Bool,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::I16 => "i16",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::Bool => "bool",
        }
    }

    pub fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::I64 => 8,
            DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Typed, contiguous elements.
#[derive(Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.dtype(), self.len())
    }
}

impl Default for Data {
    fn default() -> Self {
        Data::F32(Vec::new())
    }
}

macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::F32($v) => $body,
            Data::I8($v) => $body,
            Data::U8($v) => $body,
            Data::I16($v) => $body,
            Data::I32($v) => $body,
            Data::I64($v) => $body,
            Data::Bool($v) => $body,
        }
    };
}

impl Data {
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::I8(_) => DType::I8,
            Data::U8(_) => DType::U8,
            Data::I16(_) => DType::I16,
            Data::I32(_) => DType::I32,
            Data::I64(_) => DType::I64,
            Data::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Zeros of a type.
    pub fn zeros(dtype: DType, len: usize) -> Data {
        match dtype {
            DType::F32 => Data::F32(vec![0.0; len]),
            DType::I8 => Data::I8(vec![0; len]),
            DType::U8 => Data::U8(vec![0; len]),
            DType::I16 => Data::I16(vec![0; len]),
            DType::I32 => Data::I32(vec![0; len]),
            DType::I64 => Data::I64(vec![0; len]),
            DType::Bool => Data::Bool(vec![false; len]),
        }
    }

    /// Makes this buffer hold `len` elements of `dtype`, reusing its allocation when the type
    /// is unchanged. Contents are unspecified (kernels overwrite every element).
    pub fn reshape_for(&mut self, dtype: DType, len: usize) {
        if self.dtype() != dtype {
            *self = Data::zeros(dtype, len);
            return;
        }
        match self {
            Data::F32(v) => v.resize(len, 0.0),
            Data::I8(v) => v.resize(len, 0),
            Data::U8(v) => v.resize(len, 0),
            Data::I16(v) => v.resize(len, 0),
            Data::I32(v) => v.resize(len, 0),
            Data::I64(v) => v.resize(len, 0),
            Data::Bool(v) => v.resize(len, false),
        }
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            Data::F32(v) => Some(v),
            _ => None,
        }
    }

    /// Integer contents widened to i64 (shape, axes and index tensors).
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match self {
            Data::I8(v) => v.iter().map(|x| i64::from(*x)).collect(),
            Data::U8(v) => v.iter().map(|x| i64::from(*x)).collect(),
            Data::I16(v) => v.iter().map(|x| i64::from(*x)).collect(),
            Data::I32(v) => v.iter().map(|x| i64::from(*x)).collect(),
            Data::I64(v) => v.clone(),
            Data::Bool(v) => v.iter().map(|x| i64::from(*x)).collect(),
            Data::F32(_) => return None,
        })
    }

    /// Contents converted to f32 (float constants, and integers used as floats).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Data::F32(v) => v.clone(),
            Data::I8(v) => v.iter().map(|x| f32::from(*x)).collect(),
            Data::U8(v) => v.iter().map(|x| f32::from(*x)).collect(),
            Data::I16(v) => v.iter().map(|x| f32::from(*x)).collect(),
            Data::I32(v) => v.iter().map(|x| *x as f32).collect(),
            Data::I64(v) => v.iter().map(|x| *x as f32).collect(),
            Data::Bool(v) => v.iter().map(|x| f32::from(u8::from(*x))).collect(),
        }
    }

    /// Little-endian bytes of the elements.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        match self {
            Data::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I8(v) => v.iter().map(|x| *x as u8).collect(),
            Data::U8(v) => v.clone(),
            Data::I16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Data::Bool(v) => v.iter().map(|x| u8::from(*x)).collect(),
        }
    }

    /// Elements from little-endian bytes; `None` when the length is not a whole number of
    /// elements.
    pub fn from_le_bytes(dtype: DType, bytes: &[u8]) -> Option<Data> {
        if !bytes.len().is_multiple_of(dtype.size()) {
            return None;
        }
        Some(match dtype {
            DType::F32 => Data::F32(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            DType::I8 => Data::I8(bytes.iter().map(|b| *b as i8).collect()),
            DType::U8 => Data::U8(bytes.to_vec()),
            DType::I16 => Data::I16(
                bytes
                    .chunks_exact(2)
                    .map(|b| i16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            DType::I32 => Data::I32(
                bytes
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            DType::I64 => Data::I64(
                bytes
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                    .collect(),
            ),
            DType::Bool => Data::Bool(bytes.iter().map(|b| *b != 0).collect()),
        })
    }
}

/// A tensor as a run takes and gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    /// A tensor, checking that the element count matches the shape.
    pub fn new(shape: Vec<usize>, data: Data) -> Option<Tensor> {
        (shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d)) == Some(data.len()))
            .then_some(Tensor { shape, data })
    }

    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }
}

/// The number of elements of a shape, `None` on overflow.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, d| a.checked_mul(*d))
}

/// Row-major strides of a shape.
pub fn strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// Borrowed elements of one type: what kernels read.
#[derive(Clone, Copy)]
pub enum View<'a> {
    F32(&'a [f32]),
    I8(&'a [i8]),
    U8(&'a [u8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    Bool(&'a [bool]),
}

/// Mutably borrowed elements of one type: what kernels write.
pub enum ViewMut<'a> {
    F32(&'a mut [f32]),
    I8(&'a mut [i8]),
    U8(&'a mut [u8]),
    I16(&'a mut [i16]),
    I32(&'a mut [i32]),
    I64(&'a mut [i64]),
    Bool(&'a mut [bool]),
}

macro_rules! typed_access {
    ($name:ident, $name_mut:ident, $variant:ident, $t:ty) => {
        impl<'a> View<'a> {
            pub fn $name(self) -> Result<&'a [$t], String> {
                match self {
                    View::$variant(v) => Ok(v),
                    other => Err(format!(
                        "expected {} elements, got {}",
                        stringify!($t),
                        other.dtype()
                    )),
                }
            }
        }
        impl<'a> ViewMut<'a> {
            pub fn $name_mut(&mut self) -> Result<&mut [$t], String> {
                match self {
                    ViewMut::$variant(v) => Ok(v),
                    other => Err(format!(
                        "expected to write {} elements, got {}",
                        stringify!($t),
                        other.dtype()
                    )),
                }
            }
        }
    };
}
typed_access!(f32s, f32s_mut, F32, f32);
typed_access!(i8s, i8s_mut, I8, i8);
typed_access!(u8s, u8s_mut, U8, u8);
typed_access!(i16s, i16s_mut, I16, i16);
typed_access!(i32s, i32s_mut, I32, i32);
typed_access!(i64s, i64s_mut, I64, i64);
typed_access!(bools, bools_mut, Bool, bool);

impl View<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            View::F32(_) => DType::F32,
            View::I8(_) => DType::I8,
            View::U8(_) => DType::U8,
            View::I16(_) => DType::I16,
            View::I32(_) => DType::I32,
            View::I64(_) => DType::I64,
            View::Bool(_) => DType::Bool,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            View::F32(v) => v.len(),
            View::I8(v) => v.len(),
            View::U8(v) => v.len(),
            View::I16(v) => v.len(),
            View::I32(v) => v.len(),
            View::I64(v) => v.len(),
            View::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Integer elements widened to i64 (index and shape tensors).
    pub fn to_i64(self) -> Option<Vec<i64>> {
        Some(match self {
            View::I8(v) => v.iter().map(|x| i64::from(*x)).collect(),
            View::U8(v) => v.iter().map(|x| i64::from(*x)).collect(),
            View::I16(v) => v.iter().map(|x| i64::from(*x)).collect(),
            View::I32(v) => v.iter().map(|x| i64::from(*x)).collect(),
            View::I64(v) => v.to_vec(),
            View::Bool(v) => v.iter().map(|x| i64::from(*x)).collect(),
            View::F32(_) => return None,
        })
    }
}

impl ViewMut<'_> {
    pub fn dtype(&self) -> DType {
        match self {
            ViewMut::F32(_) => DType::F32,
            ViewMut::I8(_) => DType::I8,
            ViewMut::U8(_) => DType::U8,
            ViewMut::I16(_) => DType::I16,
            ViewMut::I32(_) => DType::I32,
            ViewMut::I64(_) => DType::I64,
            ViewMut::Bool(_) => DType::Bool,
        }
    }
}

impl Data {
    /// The first `len` elements (all when `len` is larger).
    pub fn view(&self, len: usize) -> View<'_> {
        match self {
            Data::F32(v) => View::F32(&v[..len.min(v.len())]),
            Data::I8(v) => View::I8(&v[..len.min(v.len())]),
            Data::U8(v) => View::U8(&v[..len.min(v.len())]),
            Data::I16(v) => View::I16(&v[..len.min(v.len())]),
            Data::I32(v) => View::I32(&v[..len.min(v.len())]),
            Data::I64(v) => View::I64(&v[..len.min(v.len())]),
            Data::Bool(v) => View::Bool(&v[..len.min(v.len())]),
        }
    }

    pub fn full_view(&self) -> View<'_> {
        self.view(usize::MAX)
    }

    /// The first `len` elements, mutably (all when `len` is larger).
    pub fn view_mut(&mut self, len: usize) -> ViewMut<'_> {
        match self {
            Data::F32(v) => {
                let n = len.min(v.len());
                ViewMut::F32(&mut v[..n])
            }
            Data::I8(v) => {
                let n = len.min(v.len());
                ViewMut::I8(&mut v[..n])
            }
            Data::U8(v) => {
                let n = len.min(v.len());
                ViewMut::U8(&mut v[..n])
            }
            Data::I16(v) => {
                let n = len.min(v.len());
                ViewMut::I16(&mut v[..n])
            }
            Data::I32(v) => {
                let n = len.min(v.len());
                ViewMut::I32(&mut v[..n])
            }
            Data::I64(v) => {
                let n = len.min(v.len());
                ViewMut::I64(&mut v[..n])
            }
            Data::Bool(v) => {
                let n = len.min(v.len());
                ViewMut::Bool(&mut v[..n])
            }
        }
    }

    /// Grows the buffer to hold at least `len` elements of `dtype` (never shrinks, so a slot
    /// shared by values of different sizes is sized once).
    pub fn ensure(&mut self, dtype: DType, len: usize) {
        if self.dtype() != dtype {
            *self = Data::zeros(dtype, len);
        } else if self.len() < len {
            self.reshape_for(dtype, len);
        }
    }

    /// A copy of the first `len` elements.
    pub fn prefix(&self, len: usize) -> Data {
        match self.view(len) {
            View::F32(v) => Data::F32(v.to_vec()),
            View::I8(v) => Data::I8(v.to_vec()),
            View::U8(v) => Data::U8(v.to_vec()),
            View::I16(v) => Data::I16(v.to_vec()),
            View::I32(v) => Data::I32(v.to_vec()),
            View::I64(v) => Data::I64(v.to_vec()),
            View::Bool(v) => Data::Bool(v.to_vec()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: [DType; 7] = [
        DType::F32,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::I32,
        DType::I64,
        DType::Bool,
    ];

    proptest! {
        /// Bytes to elements and back is the identity, for every type and any bytes of a
        /// whole number of elements (bools read any non-zero byte as true, so they come
        /// back as 0 or 1).
        #[test]
        fn le_bytes_round_trip(t in 0usize..7, bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let dtype = ALL[t];
            let whole = bytes.len() / dtype.size() * dtype.size();
            let data = Data::from_le_bytes(dtype, &bytes[..whole]).unwrap();
            prop_assert_eq!(data.dtype(), dtype);
            prop_assert_eq!(data.len(), whole / dtype.size());
            let back = data.to_le_bytes();
            if dtype == DType::Bool {
                let expected: Vec<u8> = bytes[..whole].iter().map(|b| u8::from(*b != 0)).collect();
                prop_assert_eq!(back, expected);
            } else {
                prop_assert_eq!(&back[..], &bytes[..whole]);
            }
            // One byte more than whole elements is refused.
            if dtype.size() > 1 && whole < bytes.len() {
                prop_assert!(Data::from_le_bytes(dtype, &bytes[..whole + 1]).is_none());
            }
        }
    }

    #[test]
    fn partial_elements_are_refused() {
        for dtype in ALL.into_iter().filter(|d| d.size() > 1) {
            assert!(Data::from_le_bytes(dtype, &[0; 3]).is_none(), "{dtype}");
            assert!(Data::from_le_bytes(dtype, &[0; 9]).is_none(), "{dtype}");
        }
        assert_eq!(
            Data::from_le_bytes(DType::I16, &[1, 0, 0xff, 0xff]),
            Some(Data::I16(vec![1, -1]))
        );
    }

    #[test]
    fn a_tensor_holds_exactly_its_shape() {
        assert!(Tensor::new(vec![2, 3], Data::zeros(DType::F32, 6)).is_some());
        assert!(Tensor::new(vec![2, 3], Data::zeros(DType::F32, 5)).is_none());
        assert!(
            Tensor::new(vec![], Data::F32(vec![1.0])).is_some(),
            "a scalar"
        );
        assert!(
            Tensor::new(vec![0, 7], Data::F32(vec![])).is_some(),
            "empty"
        );
        assert!(
            Tensor::new(vec![usize::MAX, 2], Data::F32(vec![])).is_none(),
            "an overflowing shape fits nothing"
        );
        assert_eq!(element_count(&[usize::MAX, 2]), None);
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(strides(&[2, 3, 4]), [12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
    }

    #[test]
    fn conversions_widen_exactly() {
        let ints = Data::I8(vec![-128, 0, 127]);
        assert_eq!(ints.to_i64(), Some(vec![-128, 0, 127]));
        assert_eq!(ints.to_f32(), [-128.0, 0.0, 127.0]);
        assert_eq!(Data::Bool(vec![true, false]).to_i64(), Some(vec![1, 0]));
        assert_eq!(Data::Bool(vec![true, false]).to_f32(), [1.0, 0.0]);
        assert_eq!(
            Data::F32(vec![1.5]).to_i64(),
            None,
            "floats are not indices"
        );
        assert_eq!(Data::U8(vec![255]).to_f32(), [255.0]);
        assert_eq!(Data::I64(vec![-3]).to_f32(), [-3.0]);
        assert_eq!(Data::F32(vec![2.0]).as_f32(), Some(&[2.0][..]));
        assert_eq!(Data::I32(vec![2]).as_f32(), None);
    }

    #[test]
    fn buffers_resize_in_place_and_change_type_when_asked() {
        let mut d = Data::F32(vec![1.0; 4]);
        d.ensure(DType::F32, 2);
        assert_eq!(d.len(), 4, "ensure never shrinks");
        d.ensure(DType::F32, 9);
        assert_eq!(d.len(), 9);
        d.ensure(DType::I64, 3);
        assert_eq!((d.dtype(), d.len()), (DType::I64, 3));
        d.reshape_for(DType::I64, 1);
        assert_eq!(d.len(), 1);
        let v = Data::I16(vec![1, 2, 3]);
        assert_eq!(v.prefix(2), Data::I16(vec![1, 2]));
        assert_eq!(
            v.prefix(10),
            v,
            "a prefix longer than the data is all of it"
        );
        assert_eq!(v.view(2).len(), 2);
        assert_eq!(v.full_view().dtype(), DType::I16);
        for dtype in ALL {
            let z = Data::zeros(dtype, 3);
            assert_eq!((z.dtype(), z.len()), (dtype, 3));
            assert!(z.to_f32().iter().all(|x| *x == 0.0));
            assert_eq!(dtype.to_string(), dtype.name());
        }
    }
}
