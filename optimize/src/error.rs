//! The errors of the export passes.

/// One op that an export cannot translate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedOp {
    /// The node's name in the source model.
    pub node: String,
    /// The op, as tract names it (`Conv`, `Rsqrt`, `Gather`, ...).
    pub op: String,
    /// Why it cannot be exported, when more can be said than "no translation".
    pub reason: String,
}

impl std::fmt::Display for UnsupportedOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (node {:?}): {}", self.op, self.node, self.reason)
    }
}

/// Errors of [`crate::tflite::export`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The source model does not parse or type.
    #[error("cannot read the source model: {0}")]
    Source(String),
    /// An input has a dimension that is not fixed and no shape was given for it.
    #[error(
        "input {input:?} has shape {shape}; TFLite needs fixed shapes: give one with --input-shape {input}=D1,D2,..."
    )]
    UnknownShape { input: String, shape: String },
    /// A shape was given for an input the model does not have, or with the wrong rank.
    #[error("{0}")]
    BadShape(String),
    /// Ops with no faithful TFLite translation; nothing was written.
    #[error("{} op(s) cannot be exported to TFLite:\n  {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Unsupported(Vec<UnsupportedOp>),
    /// The writer failed (or panicked) on a model the op check accepted.
    #[error("writing the TFLite flatbuffer failed: {0}")]
    Write(String),
    /// Calibration inputs are missing, unreadable or of the wrong shape.
    #[error("calibration data: {0}")]
    Calibration(String),
    /// A serving layout cannot express the model (a name, version or element type).
    #[error("{0}")]
    Layout(String),
    /// The written file, run by tract, disagrees with the source model.
    #[error("the exported model does not match the source model: {0}")]
    Mismatch(String),
}
