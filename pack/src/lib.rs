//! The modelpack format: manifests, content-defined chunks, blake3 digests, ed25519
//! signatures, trust policies and the single-file `.aqpack` archive.
//!
//! This crate is the bottom of the workspace. It works on bytes and on `std::io::Read` /
//! `std::io::Write` streams handed to it; it never opens files, sockets or threads, and it has
//! no async runtime. Everything that crosses a trust boundary (a manifest, a signature, an
//! archive, a policy file) is parsed here into a validated type or rejected with a typed error.

pub mod archive;
pub mod chunk;
pub mod digest;
pub mod keys;
pub mod manifest;
pub mod reference;
pub mod signature;
pub mod trust;

pub use digest::Digest;
pub use keys::{PublicKey, SecretKey};
pub use manifest::{Manifest, ManifestError};
pub use reference::PackRef;
pub use signature::{SignatureEnvelope, SignedManifest};
pub use trust::{TrustError, TrustPolicy};

/// The JSON Schema that every manifest this crate writes conforms to (checked by tests).
pub const MANIFEST_SCHEMA: &str = include_str!("../../schema/manifest.v1.schema.json");
