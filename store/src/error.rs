//! The store's error type and its coarse kinds (which the CLI maps to exit codes).

use aq_pack::archive::ArchiveError;
use aq_pack::chunk::ChunkError;
use aq_pack::manifest::ManifestError;
use aq_pack::trust::TrustError;

/// Errors from registry operations.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("registry database error")]
    Database(#[from] redb::Error),
    #[error("the registry is in use by another process (its database is locked)")]
    Busy,
    #[error("no pack matches {0}")]
    NotFound(String),
    #[error("pack {id} already exists (digest {digest}); remove it first with `aq pack rm {id}`")]
    AlreadyExists { id: String, digest: String },
    #[error("registry integrity error: {0}")]
    Corrupt(String),
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Trust(#[from] TrustError),
}

/// What sort of failure an error is, for exit codes and HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    Conflict,
    /// Stored or received data does not match its digest, signature or declared size.
    Integrity,
    /// A signature is missing, invalid, or made by a key the policy does not trust.
    Untrusted,
    /// Malformed input: a manifest, archive framing, path, name or argument.
    InvalidInput,
    Busy,
    Io,
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Io { .. } | StoreError::Database(_) => ErrorKind::Io,
            StoreError::Busy => ErrorKind::Busy,
            StoreError::NotFound(_) => ErrorKind::NotFound,
            StoreError::AlreadyExists { .. } => ErrorKind::Conflict,
            StoreError::Corrupt(_) | StoreError::Chunk(_) => ErrorKind::Integrity,
            StoreError::InvalidInput(_) | StoreError::Manifest(_) => ErrorKind::InvalidInput,
            StoreError::Trust(t) => trust_kind(t),
            StoreError::Archive(a) => archive_kind(a),
        }
    }
}

/// The kind of an archive error (also for callers that get one outside a [`StoreError`]).
pub fn archive_kind(a: &ArchiveError) -> ErrorKind {
    match a {
        ArchiveError::Io(_) | ArchiveError::Write(_) => ErrorKind::Io,
        ArchiveError::Trust(t) => trust_kind(t),
        ArchiveError::Chunk(_)
        | ArchiveError::ChecksumMismatch
        | ArchiveError::UnknownChunk(_)
        | ArchiveError::DuplicateChunk(_)
        | ArchiveError::MissingChunks { .. } => ErrorKind::Integrity,
        _ => ErrorKind::InvalidInput,
    }
}

/// The kind of a trust error.
pub fn trust_kind(t: &TrustError) -> ErrorKind {
    match t {
        TrustError::Manifest(_) | TrustError::InvalidPolicy(_) | TrustError::Signature(_) => {
            ErrorKind::InvalidInput
        }
        _ => ErrorKind::Untrusted,
    }
}

pub(crate) fn io_err(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.display().to_string();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

macro_rules! impl_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Database(e.into())
            }
        }
    )*};
}
impl_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Busy,
            other => StoreError::Database(other.into()),
        }
    }
}
