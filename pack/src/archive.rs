//! The single-file `.aqpack` form, for air-gapped transfer: a stream that a reader checks as it
//! goes.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! header   "AQPACK" 0x00 VERSION(u8 = 1)
//! frame*   TAG(u8) LEN(u64) PAYLOAD(LEN bytes)
//!   'M'    canonical manifest bytes                      (exactly once, first)
//!   'S'    signature envelope JSON                       (at most once, right after 'M')
//!   'C'    chunk: DIGEST(32) ZSTD-BYTES                  (each manifest chunk exactly once)
//!   'E'    end: CHUNK-COUNT(u64) BLAKE3(32) of every byte before this payload (last frame)
//! ```
//!
//! There are no file names in the stream: chunks are named by digest, and the only paths are
//! the manifest's, which [`crate::Manifest::parse`] has already refused if absolute or `..`.
//! The reader is a type-state machine: [`open`] yields a [`PendingArchive`] whose manifest and
//! signature can be inspected, and only [`PendingArchive::verify`] (signature and trust policy)
//! yields a [`VerifiedArchive`] that decompresses chunks. Every frame length is checked against
//! a limit before anything is allocated; every chunk is decompressed into a buffer bounded by
//! its declared size and checked against its digest.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::time::SystemTime;

use crate::chunk::{self, ChunkError};
use crate::digest::Digest;
use crate::manifest::{MAX_MANIFEST_BYTES, ManifestError};
use crate::signature::{MAX_SIGNATURE_BYTES, SignatureError, SignedManifest};
use crate::trust::{TrustError, TrustPolicy, Verdict};

/// File magic, without the version byte.
pub const MAGIC: &[u8; 7] = b"AQPACK\0";
/// Archive format version this crate reads and writes.
pub const ARCHIVE_VERSION: u8 = 1;

const TAG_MANIFEST: u8 = b'M';
const TAG_SIGNATURE: u8 = b'S';
const TAG_CHUNK: u8 = b'C';
const TAG_END: u8 = b'E';

/// Errors from reading or writing an archive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    #[error("failed to read archive")]
    Io(#[source] io::Error),
    #[error("failed to write archive")]
    Write(#[source] io::Error),
    #[error("archive is truncated at byte {offset}")]
    Truncated { offset: u64 },
    #[error("not an .aqpack archive (bad magic)")]
    BadMagic,
    #[error("archive format version {0} is not supported (this build reads {ARCHIVE_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unexpected frame {tag:?} at byte {offset}: expected {expected}")]
    UnexpectedFrame {
        tag: char,
        offset: u64,
        expected: &'static str,
    },
    #[error("frame {tag:?} at byte {offset} declares {len} bytes, over its limit of {limit}")]
    FrameTooLarge {
        tag: char,
        offset: u64,
        len: u64,
        limit: u64,
    },
    #[error("archive holds chunk {0}, which the manifest does not reference")]
    UnknownChunk(Digest),
    #[error("archive holds chunk {0} twice")]
    DuplicateChunk(Digest),
    #[error("archive ends without {missing} chunk(s) the manifest references")]
    MissingChunks { missing: usize },
    #[error("archive end record does not match its contents (corrupted archive)")]
    ChecksumMismatch,
    #[error("archive has data after its end record")]
    TrailingData,
    #[error("archive manifest is invalid")]
    Manifest(#[from] ManifestError),
    #[error("archive signature is invalid")]
    Signature(#[from] SignatureError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("archive chunk is invalid")]
    Chunk(#[from] ChunkError),
}

/// Wraps a reader, counting and hashing every byte.
struct HashingReader<R> {
    inner: R,
    hasher: blake3::Hasher,
    offset: u64,
}

impl<R: Read> HashingReader<R> {
    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ArchiveError> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.hasher.update(buf);
                self.offset += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(ArchiveError::Truncated {
                offset: self.offset,
            }),
            Err(e) => Err(ArchiveError::Io(e)),
        }
    }

    /// Reads `len` bytes; the caller has checked `len` against a limit.
    fn read_vec(&mut self, len: u64) -> Result<Vec<u8>, ArchiveError> {
        let len = usize::try_from(len).map_err(|_| ArchiveError::Truncated {
            offset: self.offset,
        })?;
        let mut buf = vec![0u8; len];
        self.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn read_u64(&mut self) -> Result<u64, ArchiveError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a frame header: `(tag, payload length, offset of the frame)`.
    fn read_frame_header(&mut self) -> Result<(u8, u64, u64), ArchiveError> {
        let offset = self.offset;
        let mut tag = [0u8; 1];
        self.read_exact(&mut tag)?;
        let len = self.read_u64()?;
        Ok((tag[0], len, offset))
    }
}

fn check_len(tag: u8, offset: u64, len: u64, limit: u64) -> Result<(), ArchiveError> {
    if len > limit {
        return Err(ArchiveError::FrameTooLarge {
            tag: char::from(tag),
            offset,
            len,
            limit,
        });
    }
    Ok(())
}

/// An archive whose header, manifest and signature have been read but not yet trusted.
pub struct PendingArchive<R> {
    reader: HashingReader<R>,
    signed: SignedManifest,
    /// The frame header read after the manifest that was not a signature.
    next_frame: (u8, u64, u64),
}

/// Reads an archive's header, manifest and optional signature.
pub fn open<R: Read>(inner: R) -> Result<PendingArchive<R>, ArchiveError> {
    let mut reader = HashingReader {
        inner,
        hasher: blake3::Hasher::new(),
        offset: 0,
    };
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).map_err(|e| match e {
        ArchiveError::Truncated { .. } => ArchiveError::BadMagic,
        other => other,
    })?;
    if &header[..7] != MAGIC {
        return Err(ArchiveError::BadMagic);
    }
    if header[7] != ARCHIVE_VERSION {
        return Err(ArchiveError::UnsupportedVersion(header[7]));
    }
    let (tag, len, offset) = reader.read_frame_header()?;
    if tag != TAG_MANIFEST {
        return Err(ArchiveError::UnexpectedFrame {
            tag: char::from(tag),
            offset,
            expected: "the manifest",
        });
    }
    check_len(tag, offset, len, MAX_MANIFEST_BYTES as u64)?;
    let manifest_bytes = reader.read_vec(len)?;
    let mut next = reader.read_frame_header()?;
    let signature = if next.0 == TAG_SIGNATURE {
        check_len(next.0, next.2, next.1, MAX_SIGNATURE_BYTES as u64)?;
        let sig = reader.read_vec(next.1)?;
        next = reader.read_frame_header()?;
        Some(sig)
    } else {
        None
    };
    let signed =
        SignedManifest::parse(&manifest_bytes, signature.as_deref()).map_err(|e| match e {
            TrustError::Manifest(m) => ArchiveError::Manifest(m),
            TrustError::Signature(s) => ArchiveError::Signature(s),
            other => ArchiveError::Trust(other),
        })?;
    Ok(PendingArchive {
        reader,
        signed,
        next_frame: next,
    })
}

impl<R: Read> PendingArchive<R> {
    /// The manifest and signature, not yet verified.
    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }

    /// Checks the signature against `policy`; only then can chunks be read.
    pub fn verify(
        self,
        policy: &TrustPolicy,
        now: SystemTime,
        allow_unsigned: bool,
    ) -> Result<(VerifiedArchive<R>, Verdict), ArchiveError> {
        let verdict = policy.verify(&self.signed, now, allow_unsigned)?;
        let expected = self
            .signed
            .manifest
            .unique_chunks()
            .into_iter()
            .map(|c| (c.digest, c.size))
            .collect();
        Ok((
            VerifiedArchive {
                reader: self.reader,
                signed: self.signed,
                expected,
                seen: HashSet::new(),
                next_frame: Some(self.next_frame),
                finished: false,
            },
            verdict,
        ))
    }
}

/// A chunk read from an archive, decompressed and checked against its digest and size.
#[derive(Debug, Clone)]
pub struct VerifiedChunk {
    pub digest: Digest,
    pub size: u64,
    /// The zstd bytes as they were in the archive (a store can keep them as they are).
    pub compressed: Vec<u8>,
}

/// An archive whose manifest is trusted; yields verified chunks.
pub struct VerifiedArchive<R> {
    reader: HashingReader<R>,
    signed: SignedManifest,
    expected: HashMap<Digest, u64>,
    seen: HashSet<Digest>,
    next_frame: Option<(u8, u64, u64)>,
    finished: bool,
}

impl<R: Read> VerifiedArchive<R> {
    pub fn signed(&self) -> &SignedManifest {
        &self.signed
    }

    /// Reads the next chunk; `Ok(None)` after a valid end record followed by end of input.
    pub fn next_chunk(&mut self) -> Result<Option<VerifiedChunk>, ArchiveError> {
        if self.finished {
            return Ok(None);
        }
        let (tag, len, offset) = match self.next_frame.take() {
            Some(frame) => frame,
            None => self.reader.read_frame_header()?,
        };
        match tag {
            TAG_CHUNK => {
                // The digest comes first; its declared size bounds the compressed length.
                if len < 32 {
                    return Err(ArchiveError::Truncated { offset });
                }
                let mut digest = [0u8; 32];
                self.reader.read_exact(&mut digest)?;
                let digest = Digest(digest);
                let size = *self
                    .expected
                    .get(&digest)
                    .ok_or(ArchiveError::UnknownChunk(digest))?;
                if !self.seen.insert(digest) {
                    return Err(ArchiveError::DuplicateChunk(digest));
                }
                check_len(tag, offset, len - 32, chunk::max_compressed_size(size))?;
                let compressed = self.reader.read_vec(len - 32)?;
                chunk::decompress_verified(&compressed, digest, size)?;
                Ok(Some(VerifiedChunk {
                    digest,
                    size,
                    compressed,
                }))
            }
            TAG_END => {
                if len != 40 {
                    return Err(ArchiveError::FrameTooLarge {
                        tag: 'E',
                        offset,
                        len,
                        limit: 40,
                    });
                }
                // The hash covers every byte before the end record's payload.
                let expected_hash = *self.reader.hasher.finalize().as_bytes();
                let count = self.reader.read_u64()?;
                let mut hash = [0u8; 32];
                self.reader.read_exact(&mut hash)?;
                if count != self.seen.len() as u64 {
                    return Err(ArchiveError::ChecksumMismatch);
                }
                let missing = self.expected.len() - self.seen.len();
                if missing > 0 {
                    return Err(ArchiveError::MissingChunks { missing });
                }
                if hash != expected_hash {
                    return Err(ArchiveError::ChecksumMismatch);
                }
                let mut probe = [0u8; 1];
                match self.reader.inner.read(&mut probe) {
                    Ok(0) => {}
                    Ok(_) => return Err(ArchiveError::TrailingData),
                    Err(e) => return Err(ArchiveError::Io(e)),
                }
                self.finished = true;
                Ok(None)
            }
            other => Err(ArchiveError::UnexpectedFrame {
                tag: char::from(other),
                offset,
                expected: "a chunk or the end record",
            }),
        }
    }
}

/// Writes an archive: header, manifest and signature first, then chunks, then the end record.
pub struct ArchiveWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    chunks: u64,
}

impl<W: Write> ArchiveWriter<W> {
    /// Starts an archive for `signed`.
    pub fn new(inner: W, signed: &SignedManifest) -> Result<Self, ArchiveError> {
        let mut w = ArchiveWriter {
            inner,
            hasher: blake3::Hasher::new(),
            chunks: 0,
        };
        let mut header = [0u8; 8];
        header[..7].copy_from_slice(MAGIC);
        header[7] = ARCHIVE_VERSION;
        w.put(&header)?;
        w.frame(TAG_MANIFEST, &[&signed.manifest_bytes])?;
        if let Some(sig) = &signed.signature {
            w.frame(TAG_SIGNATURE, &[&sig.to_bytes()])?;
        }
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        self.hasher.update(bytes);
        self.inner.write_all(bytes).map_err(ArchiveError::Write)
    }

    fn frame(&mut self, tag: u8, parts: &[&[u8]]) -> Result<(), ArchiveError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        self.put(&[tag])?;
        self.put(&(len as u64).to_le_bytes())?;
        for p in parts {
            self.put(p)?;
        }
        Ok(())
    }

    /// Appends one chunk (its zstd bytes, as stored).
    pub fn write_chunk(&mut self, digest: &Digest, compressed: &[u8]) -> Result<(), ArchiveError> {
        self.frame(TAG_CHUNK, &[&digest.0, compressed])?;
        self.chunks += 1;
        Ok(())
    }

    /// Writes the end record and returns the inner writer.
    pub fn finish(mut self) -> Result<W, ArchiveError> {
        self.put(&[TAG_END])?;
        self.put(&40u64.to_le_bytes())?;
        let hash = *self.hasher.finalize().as_bytes();
        self.inner
            .write_all(&self.chunks.to_le_bytes())
            .and_then(|()| self.inner.write_all(&hash))
            .and_then(|()| self.inner.flush())
            .map_err(ArchiveError::Write)?;
        Ok(self.inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::manifest::{ChunkRef, FileEntry, Manifest};
    use proptest::prelude::*;

    /// A signed two-file pack and its chunks' compressed bytes.
    fn build(data: &[u8], key: Option<&SecretKey>) -> (SignedManifest, Vec<(Digest, Vec<u8>)>) {
        let mut manifest = crate::manifest::tests::sample();
        let mut chunks = Vec::new();
        let mut refs = Vec::new();
        for c in chunk::chunk_stream(data) {
            let c = c.unwrap();
            refs.push(ChunkRef {
                digest: c.digest,
                size: c.data.len() as u64,
            });
            if !chunks.iter().any(|(d, _)| *d == c.digest) {
                chunks.push((c.digest, chunk::compress(&c.data, 3).unwrap()));
            }
        }
        manifest.files = vec![FileEntry {
            path: "model.onnx".into(),
            size: data.len() as u64,
            digest: Digest::of(data),
            chunks: refs,
        }];
        (SignedManifest::seal(manifest, key).unwrap(), chunks)
    }

    fn write(signed: &SignedManifest, chunks: &[(Digest, Vec<u8>)]) -> Vec<u8> {
        let mut w = ArchiveWriter::new(Vec::new(), signed).unwrap();
        for (d, c) in chunks {
            w.write_chunk(d, c).unwrap();
        }
        w.finish().unwrap()
    }

    fn policy(key: &SecretKey) -> TrustPolicy {
        TrustPolicy::parse(&format!(
            "format_version = 1\n[[key]]\nlabel = \"t\"\npublic_key = \"{}\"\npacks = [\"*\"]\n",
            key.public_key()
        ))
        .unwrap()
    }

    fn read_all(
        bytes: &[u8],
        policy: &TrustPolicy,
        allow_unsigned: bool,
    ) -> Result<(Manifest, Vec<VerifiedChunk>), ArchiveError> {
        let pending = open(bytes)?;
        let (mut verified, _) = pending.verify(policy, SystemTime::now(), allow_unsigned)?;
        let mut out = Vec::new();
        while let Some(c) = verified.next_chunk()? {
            out.push(c);
        }
        Ok((verified.signed().manifest.clone(), out))
    }

    fn data(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn round_trip_signed() {
        let key = SecretKey::from_seed([9; 32]);
        let (signed, chunks) = build(&data(300_000), Some(&key));
        let bytes = write(&signed, &chunks);
        let (manifest, read) = read_all(&bytes, &policy(&key), false).unwrap();
        assert_eq!(manifest, signed.manifest);
        assert_eq!(read.len(), chunks.len());
    }

    #[test]
    fn every_truncation_is_an_error() {
        let key = SecretKey::from_seed([9; 32]);
        let (signed, chunks) = build(&data(70_000), Some(&key));
        let bytes = write(&signed, &chunks);
        for cut in (0..bytes.len()).step_by(997).chain([bytes.len() - 1]) {
            assert!(
                read_all(&bytes[..cut], &policy(&key), false).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_flipped_byte_is_an_error() {
        let key = SecretKey::from_seed([9; 32]);
        let (signed, chunks) = build(&data(40_000), Some(&key));
        let bytes = write(&signed, &chunks);
        for i in (0..bytes.len()).step_by(211) {
            let mut bad = bytes.clone();
            bad[i] ^= 0x20;
            assert!(read_all(&bad, &policy(&key), false).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn trailing_data_unknown_and_duplicate_chunks() {
        let key = SecretKey::from_seed([9; 32]);
        let (signed, chunks) = build(&data(100_000), Some(&key));
        let mut bytes = write(&signed, &chunks);
        bytes.push(0);
        assert!(matches!(
            read_all(&bytes, &policy(&key), false),
            Err(ArchiveError::TrailingData)
        ));

        let mut dup = chunks.clone();
        dup.push(chunks[0].clone());
        assert!(matches!(
            read_all(&write(&signed, &dup), &policy(&key), false),
            Err(ArchiveError::DuplicateChunk(_))
        ));

        let stranger = (Digest::of(b"x"), chunk::compress(b"x", 3).unwrap());
        let mut extra = chunks.clone();
        extra.insert(0, stranger);
        assert!(matches!(
            read_all(&write(&signed, &extra), &policy(&key), false),
            Err(ArchiveError::UnknownChunk(_))
        ));

        let missing = &chunks[1..];
        assert!(matches!(
            read_all(&write(&signed, missing), &policy(&key), false),
            Err(ArchiveError::MissingChunks { missing: 1 })
        ));
    }

    #[test]
    fn bomb_chunk_is_refused() {
        // A chunk that claims 16 bytes but decompresses to a megabyte.
        let key = SecretKey::from_seed([9; 32]);
        let small = b"0123456789abcdef".to_vec();
        let (signed, _) = build(&small, Some(&key));
        let bomb = chunk::compress(&vec![0u8; 1 << 20], 19).unwrap();
        let bytes = write(&signed, &[(Digest::of(&small), bomb)]);
        let err = read_all(&bytes, &policy(&key), false).unwrap_err();
        assert!(
            matches!(err, ArchiveError::Chunk(ChunkError::Decompress { .. })),
            "{err}"
        );
    }

    #[test]
    fn untrusted_and_unsigned() {
        let key = SecretKey::from_seed([9; 32]);
        let stranger = SecretKey::from_seed([10; 32]);
        let (signed, chunks) = build(&data(1000), Some(&stranger));
        let bytes = write(&signed, &chunks);
        assert!(matches!(
            read_all(&bytes, &policy(&key), true),
            Err(ArchiveError::Trust(TrustError::UnknownKey { .. }))
        ));
        let (unsigned, chunks) = build(&data(1000), None);
        let bytes = write(&unsigned, &chunks);
        assert!(matches!(
            read_all(&bytes, &policy(&key), false),
            Err(ArchiveError::Trust(TrustError::Unsigned { .. }))
        ));
        assert!(read_all(&bytes, &policy(&key), true).is_ok());
    }

    #[test]
    fn oversized_frames_are_refused_before_allocation() {
        let mut bytes = b"AQPACK\0\x01M".to_vec();
        bytes.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            open(&bytes[..]),
            Err(ArchiveError::FrameTooLarge { .. })
        ));
        assert!(matches!(
            open(&b"PK\x03\x04 zip file"[..]),
            Err(ArchiveError::BadMagic)
        ));
        assert!(matches!(
            open(&b"AQPACK\0\x02"[..]),
            Err(ArchiveError::UnsupportedVersion(2))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn write_read_round_trip(len in 1usize..400_000, signed_pack in any::<bool>()) {
            let key = SecretKey::from_seed([4; 32]);
            let input = data(len);
            let (signed, chunks) = build(&input, signed_pack.then_some(&key));
            let bytes = write(&signed, &chunks);
            let (manifest, read) = read_all(&bytes, &policy(&key), !signed_pack).unwrap();
            prop_assert_eq!(&manifest, &signed.manifest);
            let mut by_digest: HashMap<Digest, Vec<u8>> = HashMap::new();
            for c in read {
                by_digest.insert(c.digest, chunk::decompress_verified(&c.compressed, c.digest, c.size).unwrap());
            }
            let rebuilt: Vec<u8> = manifest.files[0].chunks.iter().flat_map(|c| by_digest[&c.digest].clone()).collect();
            prop_assert_eq!(rebuilt, input);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read_all(&bytes, &TrustPolicy::empty(), true);
        }
    }
}
