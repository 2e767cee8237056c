//! Content-defined chunking (FastCDC) and per-chunk zstd compression with a hard output limit.
//!
//! Chunk boundaries depend on content, not offsets, so a changed tensor changes only the chunks
//! that overlap it. Each chunk is addressed by the blake3 digest of its *uncompressed* bytes, so
//! compression settings never change a chunk's identity.

use std::io::Read;

use crate::digest::Digest;

/// Smallest chunk the writer cuts (except the last chunk of a file).
pub const MIN_CHUNK_SIZE: u32 = 16 * 1024;
/// Average chunk size the writer aims for.
pub const AVG_CHUNK_SIZE: u32 = 64 * 1024;
/// Largest chunk the writer cuts.
pub const MAX_CHUNK_SIZE: u32 = 256 * 1024;
/// Largest chunk a reader accepts (leaves room for future writers with bigger chunks).
pub const READER_MAX_CHUNK_SIZE: u64 = 4 * 1024 * 1024;
/// Default zstd level for chunk compression.
pub const DEFAULT_LEVEL: i32 = 3;

/// Errors from chunking, compressing and decompressing chunks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChunkError {
    #[error("failed to read input while chunking")]
    Read(#[source] std::io::Error),
    #[error("failed to compress chunk")]
    Compress(#[source] std::io::Error),
    #[error("chunk {digest} declares {declared} bytes, more than the {limit}-byte limit")]
    TooLarge {
        digest: Digest,
        declared: u64,
        limit: u64,
    },
    #[error("chunk {digest} does not decompress within its declared size of {declared} bytes")]
    Decompress {
        digest: Digest,
        declared: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("chunk {digest} decompressed to {actual} bytes but declares {declared}")]
    SizeMismatch {
        digest: Digest,
        declared: u64,
        actual: u64,
    },
    #[error("chunk content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
}

/// One chunk cut from an input, not yet compressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChunk {
    pub digest: Digest,
    pub data: Vec<u8>,
}

/// Cuts a stream into content-defined chunks. Yields chunks in order; an empty input yields none.
pub fn chunk_stream<R: Read>(source: R) -> impl Iterator<Item = Result<RawChunk, ChunkError>> {
    fastcdc::v2020::StreamCDC::new(source, MIN_CHUNK_SIZE, AVG_CHUNK_SIZE, MAX_CHUNK_SIZE).map(
        |item| match item {
            Ok(chunk) => Ok(RawChunk {
                digest: Digest::of(&chunk.data),
                data: chunk.data,
            }),
            Err(fastcdc::v2020::Error::IoError(e)) => Err(ChunkError::Read(e)),
            Err(other) => Err(ChunkError::Read(std::io::Error::other(other.to_string()))),
        },
    )
}

/// Compresses a chunk's bytes with zstd at `level`.
pub fn compress(data: &[u8], level: i32) -> Result<Vec<u8>, ChunkError> {
    zstd::bulk::compress(data, level).map_err(ChunkError::Compress)
}

/// The largest compressed form of a chunk of `size` bytes that a reader needs to accept.
///
/// zstd never expands input by more than its documented bound; anything longer is hostile.
pub fn max_compressed_size(size: u64) -> u64 {
    // ZSTD_COMPRESSBOUND(srcSize) = srcSize + (srcSize >> 8) + margin for small inputs.
    size + (size >> 8) + 1024
}

/// Decompresses a chunk and checks it against its declared size and digest.
///
/// The output buffer is bounded by `declared_size` (itself bounded by [`READER_MAX_CHUNK_SIZE`]),
/// so a decompression bomb fails with [`ChunkError::Decompress`] instead of exhausting memory.
pub fn decompress_verified(
    compressed: &[u8],
    expected: Digest,
    declared_size: u64,
) -> Result<Vec<u8>, ChunkError> {
    if declared_size > READER_MAX_CHUNK_SIZE {
        return Err(ChunkError::TooLarge {
            digest: expected,
            declared: declared_size,
            limit: READER_MAX_CHUNK_SIZE,
        });
    }
    // Bounded by READER_MAX_CHUNK_SIZE above, so the cast cannot truncate.
    let capacity = declared_size as usize;
    let data =
        zstd::bulk::decompress(compressed, capacity).map_err(|source| ChunkError::Decompress {
            digest: expected,
            declared: declared_size,
            source,
        })?;
    if data.len() as u64 != declared_size {
        return Err(ChunkError::SizeMismatch {
            digest: expected,
            declared: declared_size,
            actual: data.len() as u64,
        });
    }
    let actual = Digest::of(&data);
    if actual != expected {
        return Err(ChunkError::DigestMismatch { expected, actual });
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        aq_test_support::XorShift::new(seed).bytes(len)
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let input = pseudo_random(3 * 1024 * 1024 + 17, 7);
        let chunks: Vec<_> = chunk_stream(&input[..]).collect::<Result<_, _>>().unwrap();
        assert!(
            chunks.len() > 10,
            "expected many chunks, got {}",
            chunks.len()
        );
        let (last, body) = chunks.split_last().unwrap();
        for c in body {
            assert!(c.data.len() >= MIN_CHUNK_SIZE as usize);
            assert!(c.data.len() <= MAX_CHUNK_SIZE as usize);
        }
        assert!(last.data.len() <= MAX_CHUNK_SIZE as usize);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(joined, input);
    }

    #[test]
    fn local_edit_changes_few_chunks() {
        let input = pseudo_random(4 * 1024 * 1024, 11);
        let mut edited = input.clone();
        for b in &mut edited[2_000_000..2_010_000] {
            *b = b.wrapping_add(1);
        }
        let before: std::collections::HashSet<_> = chunk_stream(&input[..])
            .map(|c| c.unwrap().digest)
            .collect();
        let after: Vec<_> = chunk_stream(&edited[..]).map(|c| c.unwrap()).collect();
        let new_bytes: usize = after
            .iter()
            .filter(|c| !before.contains(&c.digest))
            .map(|c| c.data.len())
            .sum();
        assert!(
            new_bytes < 10_000 + 2 * MAX_CHUNK_SIZE as usize,
            "new bytes {new_bytes}"
        );
    }

    #[test]
    fn bomb_is_refused() {
        let zeros = vec![0u8; 1024 * 1024];
        let compressed = compress(&zeros, 3).unwrap();
        let err = decompress_verified(&compressed, Digest::of(&zeros[..1000]), 1000).unwrap_err();
        assert!(matches!(err, ChunkError::Decompress { .. }), "{err:?}");
    }

    #[test]
    fn wrong_digest_and_size_are_refused() {
        let data = b"hello chunk".to_vec();
        let compressed = compress(&data, 3).unwrap();
        let err =
            decompress_verified(&compressed, Digest::of(b"other"), data.len() as u64).unwrap_err();
        assert!(matches!(err, ChunkError::DigestMismatch { .. }));
        let err =
            decompress_verified(&compressed, Digest::of(&data), data.len() as u64 + 5).unwrap_err();
        assert!(matches!(err, ChunkError::SizeMismatch { .. }));
        let err = decompress_verified(&compressed, Digest::of(&data), READER_MAX_CHUNK_SIZE + 1)
            .unwrap_err();
        assert!(matches!(err, ChunkError::TooLarge { .. }));
        let err = decompress_verified(b"not zstd at all", Digest::of(&data), 11).unwrap_err();
        assert!(matches!(err, ChunkError::Decompress { .. }));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn compress_round_trip(data in proptest::collection::vec(any::<u8>(), 0..70_000), level in 1i32..6) {
            let c = compress(&data, level).unwrap();
            prop_assert!(c.len() as u64 <= max_compressed_size(data.len() as u64));
            let back = decompress_verified(&c, Digest::of(&data), data.len() as u64).unwrap();
            prop_assert_eq!(back, data);
        }

        #[test]
        fn chunking_is_lossless(len in 0usize..600_000, seed in any::<u64>()) {
            let input = pseudo_random(len, seed);
            let joined: Vec<u8> = chunk_stream(&input[..]).flat_map(|c| c.unwrap().data).collect();
            prop_assert_eq!(joined, input);
        }
    }
}
