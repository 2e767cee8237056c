//! The compact binary tensor body, `application/x-aq-tensors`, for clients that want no
//! JSON cost. Little-endian throughout:
//!
//! ```text
//! "AQT1"  u32 count
//! count x { u16 name_len, name (UTF-8), u8 dtype code, u8 rank, rank x u64 dims,
//!           u64 data_len, data }
//! ```
//! dtype codes: 0 f32, 1 f64, 2 f16, 3 i64, 4 i32, 5 i16, 6 i8, 7 u8, 8 u16, 9 u32, 10 u64,
//! 11 bool. Requests and responses use the same layout. Every length is checked against the
//! bytes that remain before anything is allocated.

use aq_runtime::{DType, Tensor};
use bytes::Bytes;

pub const CONTENT_TYPE: &str = "application/x-aq-tensors";
const MAGIC: &[u8; 4] = b"AQT1";
/// More tensors than any model has inputs; bounds the work a hostile count can cause.
const MAX_TENSORS: u32 = 4096;
const MAX_RANK: u8 = 16;

/// Why a binary body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BinaryError {
    #[error("the body does not start with \"AQT1\"")]
    Magic,
    #[error("the body ends inside {0}")]
    Truncated(&'static str),
    #[error("{0} tensors is more than the limit of {MAX_TENSORS}")]
    TooMany(u32),
    #[error("tensor name is not UTF-8")]
    Name,
    #[error("unknown dtype code {0}")]
    DType(u8),
    #[error("rank {0} is more than the limit of {MAX_RANK}")]
    Rank(u8),
    #[error("tensor {name:?}: {reason}")]
    Tensor { name: String, reason: String },
    #[error("{0} bytes follow the last tensor")]
    Trailing(usize),
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], BinaryError> {
        if self.bytes.len() < n {
            return Err(BinaryError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, BinaryError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, BinaryError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, BinaryError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, BinaryError> {
        let b = self.take(8, what)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
}

/// Decodes a body; tensors are views into `body` (no copy of the data).
pub fn decode(body: &Bytes) -> Result<Vec<(String, Tensor)>, BinaryError> {
    let mut r = Reader { bytes: body };
    if r.take(4, "the magic")? != MAGIC {
        return Err(BinaryError::Magic);
    }
    let count = r.u32("the tensor count")?;
    if count > MAX_TENSORS {
        return Err(BinaryError::TooMany(count));
    }
    let mut tensors = Vec::new();
    for _ in 0..count {
        let name_len = r.u16("a name length")?;
        let name = std::str::from_utf8(r.take(usize::from(name_len), "a name")?)
            .map_err(|_| BinaryError::Name)?
            .to_owned();
        let code = r.u8("a dtype")?;
        let dtype = DType::from_code(code).ok_or(BinaryError::DType(code))?;
        let rank = r.u8("a rank")?;
        if rank > MAX_RANK {
            return Err(BinaryError::Rank(rank));
        }
        let mut shape = Vec::with_capacity(usize::from(rank));
        for _ in 0..rank {
            let d = r.u64("a dim")?;
            shape.push(usize::try_from(d).map_err(|_| BinaryError::Tensor {
                name: name.clone(),
                reason: format!("dim {d} is too large"),
            })?);
        }
        let len = r.u64("a data length")?;
        let len = usize::try_from(len).map_err(|_| BinaryError::Truncated("tensor data"))?;
        let start = body.len() - r.bytes.len();
        r.take(len, "tensor data")?;
        let data = body.slice(start..start + len);
        let tensor = Tensor::from_bytes(dtype, shape, data).map_err(|e| BinaryError::Tensor {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        tensors.push((name, tensor));
    }
    if !r.bytes.is_empty() {
        return Err(BinaryError::Trailing(r.bytes.len()));
    }
    Ok(tensors)
}

/// Encodes named tensors. Names longer than 65535 bytes are cut (no model has such names).
pub fn encode<'a>(tensors: impl IntoIterator<Item = (&'a str, &'a Tensor)>) -> Vec<u8> {
    let tensors: Vec<(&str, &Tensor)> = tensors.into_iter().collect();
    let size: usize = tensors
        .iter()
        .map(|(n, t)| n.len() + t.bytes().len() + 32 + 8 * t.shape().len())
        .sum();
    let mut out = Vec::with_capacity(8 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(tensors.len() as u32).to_le_bytes());
    for (name, t) in tensors {
        let name = &name.as_bytes()[..name.len().min(usize::from(u16::MAX))];
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.push(t.dtype().code());
        out.push(t.shape().len() as u8);
        for d in t.shape() {
            out.extend_from_slice(&(*d as u64).to_le_bytes());
        }
        out.extend_from_slice(&(t.bytes().len() as u64).to_le_bytes());
        out.extend_from_slice(t.bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Vec<u8> {
        let a = Tensor::from_f32(vec![2, 2], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        let b = Tensor::from_bytes(DType::I64, vec![1], 7i64.to_le_bytes().to_vec()).unwrap();
        encode([("a", &a), ("b", &b)])
    }

    #[test]
    fn round_trip() {
        let decoded = decode(&Bytes::from(sample())).unwrap();
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].1.to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(decoded[1].1.dtype(), DType::I64);
        assert_eq!(
            encode(decoded.iter().map(|(n, t)| (n.as_str(), t))),
            sample()
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let body = sample();
        for cut in 0..body.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&body[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = body.clone();
        long.push(0);
        assert_eq!(decode(&Bytes::from(long)), Err(BinaryError::Trailing(1)));
    }

    /// A body whose tensor claims `dims` and `data_len` but carries 4 bytes of data.
    fn lying(dims: &[u64], data_len: u64) -> Vec<u8> {
        let mut body = b"AQT1".to_vec();
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.push(b'x');
        body.push(0);
        body.push(dims.len() as u8);
        for d in dims {
            body.extend_from_slice(&d.to_le_bytes());
        }
        body.extend_from_slice(&data_len.to_le_bytes());
        body.extend_from_slice(&[0; 4]);
        body
    }

    #[test]
    fn lying_lengths_are_refused_from_the_lengths_alone_and_data_is_never_copied() {
        // Lengths past the body, small enough to allocate (1 GiB) or not (u64::MAX): each is
        // refused as data the body does not hold, before any element is read; a decoder that
        // allocated from the claim first would allocate 1 GiB here, or abort.
        for (dims, len) in [
            (vec![1u64 << 28], 1u64 << 30),
            (vec![u64::MAX], u64::MAX),
            (vec![2, 2], 1 << 30),
        ] {
            assert_eq!(
                decode(&Bytes::from(lying(&dims, len))),
                Err(BinaryError::Truncated("tensor data")),
                "{dims:?} {len}"
            );
        }
        // Dims that disagree with the (honest) data length: refused by the tensor check.
        assert!(matches!(
            decode(&Bytes::from(lying(&[1u64 << 40], 4))),
            Err(BinaryError::Tensor { .. })
        ));
        // What is decoded is a view into the body: no copy, whatever the size.
        let body = Bytes::from(sample());
        let decoded = decode(&body).unwrap();
        let range = body.as_ptr_range();
        for (_, t) in &decoded {
            assert!(
                range.contains(&t.bytes().as_ptr()),
                "tensor data was copied"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(bytes));
        }

        #[test]
        fn flipped_bytes_never_panic(at in 0usize..64, bit in 0u8..8) {
            let mut body = sample();
            let at = at % body.len();
            body[at] ^= 1 << bit;
            let _ = decode(&Bytes::from(body));
        }
    }
}
