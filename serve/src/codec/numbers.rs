//! JSON numbers to and from tensor bytes: a streaming reader that flattens (possibly nested)
//! JSON arrays straight into little-endian element bytes, recording the shape, and a writer
//! that prints a tensor's elements as a flat JSON array.

use std::fmt::{self, Write as _};

use aq_runtime::{DType, Tensor};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

/// A JSON array (nested or flat) read into element bytes of `dtype`, with its shape.
pub fn read_array(raw: &str, dtype: DType) -> Result<(Vec<u8>, Vec<usize>), String> {
    let mut out = Vec::new();
    let mut dims: Vec<Option<usize>> = Vec::new();
    let mut leaf_depth = None;
    let mut de = serde_json::Deserializer::from_str(raw);
    Level {
        dtype,
        out: &mut out,
        dims: &mut dims,
        leaf_depth: &mut leaf_depth,
        depth: 0,
    }
    .deserialize(&mut de)
    .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    let dims: Vec<usize> = dims.into_iter().map(|d| d.unwrap_or(0)).collect();
    match leaf_depth {
        // A bare number is a scalar.
        Some(0) => Ok((out, Vec::new())),
        Some(d) if d != dims.len() => Err("the array is ragged".into()),
        _ => Ok((out, dims)),
    }
}

struct Level<'a> {
    dtype: DType,
    out: &'a mut Vec<u8>,
    /// The length seen at each depth (set by the first array to finish at that depth).
    dims: &'a mut Vec<Option<usize>>,
    leaf_depth: &'a mut Option<usize>,
    depth: usize,
}

enum Number {
    F(f64),
    I(i64),
    U(u64),
    B(bool),
}

impl Level<'_> {
    fn leaf<E: de::Error>(self, n: Number) -> Result<(), E> {
        match *self.leaf_depth {
            None => *self.leaf_depth = Some(self.depth),
            Some(d) if d != self.depth => return Err(E::custom("the array is ragged")),
            Some(_) => {}
        }
        push(self.dtype, n, self.out).map_err(E::custom)
    }
}

impl<'de> DeserializeSeed<'de> for Level<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Level<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an array of {} numbers", self.dtype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.leaf_depth.is_some_and(|d| d <= self.depth) {
            return Err(de::Error::custom("the array is ragged"));
        }
        let mut count = 0usize;
        while seq
            .next_element_seed(Level {
                dtype: self.dtype,
                out: &mut *self.out,
                dims: &mut *self.dims,
                leaf_depth: &mut *self.leaf_depth,
                depth: self.depth + 1,
            })?
            .is_some()
        {
            count += 1;
        }
        if self.dims.len() <= self.depth {
            self.dims.resize(self.depth + 1, None);
        }
        match self.dims[self.depth] {
            None => self.dims[self.depth] = Some(count),
            Some(seen) if seen != count => return Err(de::Error::custom("the array is ragged")),
            Some(_) => {}
        }
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.leaf(Number::F(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.leaf(Number::I(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.leaf(Number::U(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.leaf(Number::B(v))
    }
}

fn integer(n: &Number) -> Result<i128, String> {
    match *n {
        Number::I(v) => Ok(i128::from(v)),
        Number::U(v) => Ok(i128::from(v)),
        Number::B(b) => Ok(i128::from(b)),
        Number::F(v) if v.fract() == 0.0 && v.abs() < 1e38 => Ok(v as i128),
        Number::F(v) => Err(format!("{v} is not an integer")),
    }
}

fn float(n: &Number) -> f64 {
    match *n {
        Number::F(v) => v,
        Number::I(v) => v as f64,
        Number::U(v) => v as f64,
        Number::B(b) => f64::from(u8::from(b)),
    }
}

fn push(dtype: DType, n: Number, out: &mut Vec<u8>) -> Result<(), String> {
    macro_rules! int {
        ($t:ty) => {{
            let v = integer(&n)?;
            let v = <$t>::try_from(v).map_err(|_| format!("{v} does not fit in {}", dtype))?;
            out.extend_from_slice(&v.to_le_bytes());
        }};
    }
    match dtype {
        DType::F32 => out.extend_from_slice(&(float(&n) as f32).to_le_bytes()),
        DType::F64 => out.extend_from_slice(&float(&n).to_le_bytes()),
        DType::F16 => out.extend_from_slice(&half::f16::from_f64(float(&n)).to_le_bytes()),
        DType::I64 => int!(i64),
        DType::I32 => int!(i32),
        DType::I16 => int!(i16),
        DType::I8 => int!(i8),
        DType::U8 => int!(u8),
        DType::U16 => int!(u16),
        DType::U32 => int!(u32),
        DType::U64 => int!(u64),
        DType::Bool => match n {
            Number::B(b) => out.push(u8::from(b)),
            other => match integer(&other)? {
                0 => out.push(0),
                1 => out.push(1),
                v => return Err(format!("{v} is not a boolean")),
            },
        },
    }
    Ok(())
}

/// Writes the tensor's elements as a flat JSON array.
pub fn write_flat(t: &Tensor, out: &mut String) {
    out.push('[');
    let size = t.dtype().size();
    for (i, c) in t.bytes().chunks_exact(size).enumerate() {
        if i > 0 {
            out.push(',');
        }
        let finite = |out: &mut String, v: f64, text: &dyn fmt::Display| {
            if v.is_finite() {
                let _ = write!(out, "{text}");
            } else {
                // JSON has no NaN or infinity.
                out.push_str("null");
            }
        };
        match t.dtype() {
            DType::F32 => {
                let v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                finite(out, f64::from(v), &v);
            }
            DType::F64 => {
                let v = f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
                finite(out, v, &v);
            }
            DType::F16 => {
                let v = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
                finite(out, f64::from(v), &v);
            }
            DType::I64 => {
                let _ = write!(
                    out,
                    "{}",
                    i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                );
            }
            DType::U64 => {
                let _ = write!(
                    out,
                    "{}",
                    u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                );
            }
            DType::I32 => {
                let _ = write!(out, "{}", i32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
            DType::U32 => {
                let _ = write!(out, "{}", u32::from_le_bytes([c[0], c[1], c[2], c[3]]));
            }
            DType::I16 => {
                let _ = write!(out, "{}", i16::from_le_bytes([c[0], c[1]]));
            }
            DType::U16 => {
                let _ = write!(out, "{}", u16::from_le_bytes([c[0], c[1]]));
            }
            DType::I8 => {
                let _ = write!(out, "{}", c[0] as i8);
            }
            DType::U8 => {
                let _ = write!(out, "{}", c[0]);
            }
            DType::Bool => out.push_str(if c[0] != 0 { "true" } else { "false" }),
        }
    }
    out.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_arrays_flatten_with_their_shape() {
        let (bytes, shape) = read_array("[[1, 2.5], [3, -4]]", DType::F32).unwrap();
        assert_eq!(shape, vec![2, 2]);
        let (_, deep) = read_array("[[[1, 2, 3]], [[4, 5, 6]]]", DType::F32).unwrap();
        assert_eq!(deep, vec![2, 1, 3]);
        let t = Tensor::from_bytes(DType::F32, shape, bytes).unwrap();
        assert_eq!(t.to_f32().unwrap(), vec![1.0, 2.5, 3.0, -4.0]);
    }

    #[test]
    fn ragged_and_wrong_values_are_refused() {
        for (text, dtype) in [
            ("[[1, 2], [3]]", DType::F32),
            ("[[1, 2], 3]", DType::F32),
            ("[1, [2, 3]]", DType::F32),
            ("[1.5]", DType::I64),
            ("[300]", DType::U8),
            ("[\"a\"]", DType::F32),
            ("[2]", DType::Bool),
            ("[1, 2", DType::F32),
            ("{}", DType::F32),
        ] {
            assert!(read_array(text, dtype).is_err(), "{text}");
        }
    }

    #[test]
    fn writing_then_reading_gives_the_same_bytes() {
        let t = Tensor::from_f32(vec![4], &[0.1, -2.0, 1e-30, 3.4028235e38]).unwrap();
        let mut text = String::new();
        write_flat(&t, &mut text);
        let (bytes, shape) = read_array(&text, DType::F32).unwrap();
        assert_eq!(shape, vec![4]);
        assert_eq!(bytes, t.bytes());
    }
}
