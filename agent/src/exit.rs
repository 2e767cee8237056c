//! Exit codes, and how errors map to them. Documented in README.md ("Exit codes").

use aq_pack::archive::ArchiveError;
use aq_pack::manifest::ManifestError;
use aq_pack::trust::TrustError;
use aq_runtime::InspectError;
use aq_store::{ErrorKind, StoreError};

use crate::remote::RemoteError;

/// A documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// 1: an unexpected failure (I/O, a bug).
    Failure,
    /// 3: the named pack, tag or file does not exist.
    NotFound,
    /// 4: verification failed: bad or missing signature, untrusted key, or data that does not
    /// match its digest.
    Verification,
    /// 5: invalid input: a malformed archive, manifest, model file, name or argument.
    InvalidInput,
    /// 6: conflict: the pack or file already exists.
    Conflict,
    /// 7: the registry is in use by another process.
    Busy,
    /// 8: the server refused the token: missing, unknown, revoked, or without the role.
    Denied,
    /// 9: the server cannot be reached: network, TLS, or a timeout.
    Unreachable,
    /// 10: the model uses ops the export target cannot express (each is listed).
    Unsupported,
}

impl ExitCode {
    pub fn as_u8(self) -> u8 {
        match self {
            ExitCode::Failure => 1,
            ExitCode::NotFound => 3,
            ExitCode::Verification => 4,
            ExitCode::InvalidInput => 5,
            ExitCode::Conflict => 6,
            ExitCode::Busy => 7,
            ExitCode::Denied => 8,
            ExitCode::Unreachable => 9,
            ExitCode::Unsupported => 10,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            ExitCode::Failure => "failure",
            ExitCode::NotFound => "not_found",
            ExitCode::Verification => "verification_failed",
            ExitCode::InvalidInput => "invalid_input",
            ExitCode::Conflict => "conflict",
            ExitCode::Busy => "busy",
            ExitCode::Denied => "denied",
            ExitCode::Unreachable => "unreachable",
            ExitCode::Unsupported => "unsupported",
        }
    }
}

/// An error the CLI itself detects in what the user asked for.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct UserError {
    pub code: ExitCode,
    pub message: String,
}

pub fn user_error(code: ExitCode, message: impl Into<String>) -> anyhow::Error {
    UserError {
        code,
        message: message.into(),
    }
    .into()
}

fn from_store_kind(kind: ErrorKind) -> ExitCode {
    match kind {
        ErrorKind::NotFound => ExitCode::NotFound,
        ErrorKind::Conflict => ExitCode::Conflict,
        ErrorKind::Integrity | ErrorKind::Untrusted => ExitCode::Verification,
        ErrorKind::InvalidInput => ExitCode::InvalidInput,
        ErrorKind::Busy => ExitCode::Busy,
        ErrorKind::Io => ExitCode::Failure,
    }
}

fn from_remote(e: &RemoteError) -> ExitCode {
    match e {
        RemoteError::Url { .. } | RemoteError::CaFile { .. } => ExitCode::InvalidInput,
        RemoteError::Unreachable { .. } | RemoteError::BadAnswer { .. } => ExitCode::Unreachable,
        RemoteError::Refused { status, code, .. } => match status.as_u16() {
            401 | 403 => ExitCode::Denied,
            404 => ExitCode::NotFound,
            409 => ExitCode::Conflict,
            422 if code == "untrusted" || code == "integrity" => ExitCode::Verification,
            400 | 413 | 422 => ExitCode::InvalidInput,
            503 => ExitCode::Busy,
            _ => ExitCode::Failure,
        },
    }
}

/// The exit code for an error: the first typed error in its chain decides.
pub fn code_for(err: &anyhow::Error) -> ExitCode {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<UserError>() {
            return e.code;
        }
        if let Some(e) = cause.downcast_ref::<RemoteError>() {
            return from_remote(e);
        }
        if let Some(e) = cause.downcast_ref::<StoreError>() {
            return from_store_kind(e.kind());
        }
        if let Some(e) = cause.downcast_ref::<ArchiveError>() {
            return from_store_kind(aq_store::archive_kind(e));
        }
        if let Some(e) = cause.downcast_ref::<TrustError>() {
            return from_store_kind(aq_store::trust_kind(e));
        }
        #[cfg(feature = "export")]
        if let Some(e) = cause.downcast_ref::<aq_optimize::ExportError>() {
            return match e {
                aq_optimize::ExportError::Unsupported(_) => ExitCode::Unsupported,
                aq_optimize::ExportError::Source(_)
                | aq_optimize::ExportError::Layout(_)
                | aq_optimize::ExportError::Calibration(_)
                | aq_optimize::ExportError::UnknownShape { .. }
                | aq_optimize::ExportError::BadShape(_) => ExitCode::InvalidInput,
                _ => ExitCode::Failure,
            };
        }
        if cause.downcast_ref::<ManifestError>().is_some()
            || cause
                .downcast_ref::<InspectError>()
                .is_some_and(|e| !matches!(e, InspectError::Io { .. }))
            || cause.downcast_ref::<aq_pack::keys::KeyError>().is_some()
            || cause.downcast_ref::<aq_runtime::LoadError>().is_some()
            || cause.downcast_ref::<aq_serve::ConfigError>().is_some()
            || cause
                .downcast_ref::<crate::profile::ProfileError>()
                .is_some()
        {
            return ExitCode::InvalidInput;
        }
        if let Some(e) = cause.downcast_ref::<std::io::Error>()
            && e.kind() == std::io::ErrorKind::NotFound
        {
            return ExitCode::NotFound;
        }
    }
    ExitCode::Failure
}

/// An error and its causes on one line, leaving out a cause whose text the line already
/// holds (some errors print their source in their own message).
pub fn error_text(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}
