//! The chunk batch frame: several stored (zstd) chunks in one HTTP body, for uploads
//! (`POST /v1/chunks`) and downloads (`POST /v1/chunks/fetch`).
//!
//! ```text
//! "AQCB" | version u8 (1) | count u32 LE | count x ( digest [32] | size u64 LE | len u32 LE | bytes [len] )
//! ```
//! `size` is the chunk's uncompressed length, `bytes` its stored form. The decoder checks every
//! length against the bytes present and against the bounds below before it slices anything,
//! refuses repeated digests and trailing bytes, and hands out views into the body. It does not
//! decompress: the receiving registry decompresses each chunk into a buffer bounded by `size`
//! and checks its digest before it keeps it.

use std::collections::HashSet;

use aq_pack::Digest;
use aq_pack::chunk::{READER_MAX_CHUNK_SIZE, max_compressed_size};

pub const MAGIC: &[u8; 4] = b"AQCB";
pub const FRAME_VERSION: u8 = 1;
/// Most chunks in one frame.
pub const MAX_FRAME_CHUNKS: u32 = 4096;
/// The content type of a frame body.
pub const CONTENT_TYPE: &str = "application/x-aq-chunks";
const HEADER_LEN: usize = 4 + 1 + 4;
const ENTRY_HEADER_LEN: usize = 32 + 8 + 4;

/// One chunk in a frame: a view into the frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkEntry<'a> {
    pub digest: Digest,
    /// Uncompressed length.
    pub size: u64,
    /// Stored (zstd) bytes.
    pub stored: &'a [u8],
}

/// A frame that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    #[error("not a chunk frame (bad magic)")]
    BadMagic,
    #[error("chunk frame version {0} is not supported (this build reads version 1)")]
    Version(u8),
    #[error("chunk frame is truncated at byte {0}")]
    Truncated(usize),
    #[error("chunk frame declares {0} chunks; at most {MAX_FRAME_CHUNKS} are allowed")]
    TooManyChunks(u32),
    #[error("chunk {digest} declares {size} bytes; chunks are at most {READER_MAX_CHUNK_SIZE}")]
    ChunkTooLarge { digest: Digest, size: u64 },
    #[error("chunk {digest} carries {len} stored bytes, more than {size} bytes can compress to")]
    StoredTooLarge { digest: Digest, size: u64, len: u64 },
    #[error("chunk {0} appears twice in the frame")]
    Duplicate(Digest),
    #[error("chunk frame has {0} bytes after its last chunk")]
    TrailingBytes(usize),
}

/// Encodes chunks into one frame.
pub fn encode(entries: &[ChunkEntry<'_>]) -> Vec<u8> {
    let body: usize = entries
        .iter()
        .map(|e| ENTRY_HEADER_LEN + e.stored.len())
        .sum();
    let mut out = Vec::with_capacity(HEADER_LEN + body);
    out.extend_from_slice(MAGIC);
    out.push(FRAME_VERSION);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.digest.0);
        out.extend_from_slice(&e.size.to_le_bytes());
        out.extend_from_slice(&(e.stored.len() as u32).to_le_bytes());
        out.extend_from_slice(e.stored);
    }
    out
}

/// The encoded length of a frame holding chunks with these stored lengths.
pub fn encoded_len(stored_lens: impl IntoIterator<Item = usize>) -> usize {
    HEADER_LEN
        + stored_lens
            .into_iter()
            .map(|l| ENTRY_HEADER_LEN + l)
            .sum::<usize>()
}

/// Decodes a frame into views of its chunks.
pub fn decode(bytes: &[u8]) -> Result<Vec<ChunkEntry<'_>>, FrameError> {
    let mut reader = Reader { bytes, pos: 0 };
    if reader.take(4)? != MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = reader.take(1)?[0];
    if version != FRAME_VERSION {
        return Err(FrameError::Version(version));
    }
    let count = reader.u32()?;
    if count > MAX_FRAME_CHUNKS {
        return Err(FrameError::TooManyChunks(count));
    }
    // Each entry needs at least its header, so `count` is also bounded by the body length.
    let mut entries = Vec::with_capacity((count as usize).min(bytes.len() / ENTRY_HEADER_LEN));
    let mut seen = HashSet::new();
    for _ in 0..count {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(reader.take(32)?);
        let digest = Digest(digest);
        let size = reader.u64()?;
        if size > READER_MAX_CHUNK_SIZE {
            return Err(FrameError::ChunkTooLarge { digest, size });
        }
        let len = u64::from(reader.u32()?);
        if len > max_compressed_size(size) {
            return Err(FrameError::StoredTooLarge { digest, size, len });
        }
        // `len` fits in u32, so the cast cannot truncate.
        let stored = reader.take(len as usize)?;
        if !seen.insert(digest) {
            return Err(FrameError::Duplicate(digest));
        }
        entries.push(ChunkEntry {
            digest,
            size,
            stored,
        });
    }
    let rest = bytes.len() - reader.pos;
    if rest != 0 {
        return Err(FrameError::TrailingBytes(rest));
    }
    Ok(entries)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(FrameError::Truncated(self.bytes.len()))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample(n: usize) -> Vec<(Digest, u64, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let data = vec![i as u8; 100 + i];
                (Digest::of(&data), data.len() as u64, data)
            })
            .collect()
    }

    fn entries(v: &[(Digest, u64, Vec<u8>)]) -> Vec<ChunkEntry<'_>> {
        v.iter()
            .map(|(d, s, b)| ChunkEntry {
                digest: *d,
                size: *s,
                stored: b,
            })
            .collect()
    }

    #[test]
    fn round_trip_and_length() {
        let chunks = sample(3);
        let bytes = encode(&entries(&chunks));
        assert_eq!(bytes.len(), encoded_len(chunks.iter().map(|c| c.2.len())));
        assert_eq!(decode(&bytes).unwrap(), entries(&chunks));
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode(&entries(&sample(2)));
        for cut in 0..bytes.len() {
            let err = decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, FrameError::Truncated(_) | FrameError::BadMagic),
                "cut {cut}: {err}"
            );
        }
    }

    #[test]
    fn lies_and_repeats_are_refused() {
        let chunks = sample(1);
        let good = encode(&entries(&chunks));
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(decode(&trailing), Err(FrameError::TrailingBytes(1)));
        let mut version = good.clone();
        version[4] = 9;
        assert_eq!(decode(&version), Err(FrameError::Version(9)));
        let mut count = good.clone();
        count[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&count), Err(FrameError::TooManyChunks(u32::MAX)));
        let mut size = good.clone();
        size[41..49].copy_from_slice(&(READER_MAX_CHUNK_SIZE + 1).to_le_bytes());
        assert!(matches!(
            decode(&size),
            Err(FrameError::ChunkTooLarge { .. })
        ));
        let big = vec![0u8; 2000];
        let lying = encode(&[ChunkEntry {
            digest: Digest::of(b"x"),
            size: 1,
            stored: &big,
        }]);
        assert!(matches!(
            decode(&lying),
            Err(FrameError::StoredTooLarge { .. })
        ));
        let twice = [entries(&chunks), entries(&chunks)].concat();
        assert!(matches!(
            decode(&encode(&twice)),
            Err(FrameError::Duplicate(_))
        ));
    }

    proptest! {
        #[test]
        fn decode_never_panics_and_accepted_frames_re_encode(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut framed = MAGIC.to_vec();
            framed.push(FRAME_VERSION);
            framed.extend_from_slice(&bytes);
            for input in [&bytes[..], &framed[..]] {
                if let Ok(entries) = decode(input) {
                    prop_assert_eq!(encode(&entries), input.to_vec());
                }
            }
        }

        #[test]
        fn round_trip(blobs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8)) {
            let mut unique = Vec::new();
            for b in blobs {
                let d = Digest::of(&b);
                if !unique.iter().any(|(x, _, _): &(Digest, u64, Vec<u8>)| *x == d) {
                    unique.push((d, 64, b));
                }
            }
            let bytes = encode(&entries(&unique));
            prop_assert_eq!(decode(&bytes).unwrap(), entries(&unique));
        }
    }
}
