//! The local model registry: pack metadata in redb, chunk bytes in a content store directory.
//!
//! Invariants (see ARCHITECTURE.md):
//! - A chunk row in redb exists only after that chunk's file is durably in the content store.
//!   Files without rows (left by an interrupted save or import) are harmless and `gc` removes
//!   them.
//! - Every change to packs, tags and chunk rows is one redb write transaction, so a reader sees
//!   the old state or the new one, whatever point a crash interrupts.
//! - Every pack row's chunks have rows (checked when the transaction commits).
//! - One process owns a registry at a time (redb's file lock); a second gets [`StoreError::Busy`].

pub mod atomic_write;
pub mod blobs;
mod error;
mod registry;
mod unpack;

pub use blobs::{BlobStore, FsBlobStore};
pub use error::{ErrorKind, StoreError, archive_kind, trust_kind};
pub use registry::{
    GcReport, ImportReport, LooseChunk, PackSummary, PackWriter, PutReport, Registry, Snapshot,
    StoredPack, VerifyReport,
};
pub use unpack::UnpackReport;
