//! The engine's errors: why a model cannot be loaded (with every blocking operator at once),
//! and why a run failed.

use std::fmt;

/// One thing that stops a model from loading: an operator (or a feature of one) this engine
/// does not run, with how often it occurs and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    /// The operator as the file names it ("DEQUANTIZE", "ai.onnx.ml.ZipMap", a custom op's
    /// name), or a feature ("float16 activations").
    pub op: String,
    pub reason: String,
    pub count: usize,
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count > 1 {
            write!(f, "{} (x{}): {}", self.op, self.count, self.reason)
        } else {
            write!(f, "{}: {}", self.op, self.reason)
        }
    }
}

/// Collects blockers, merging repeats of the same op and reason.
#[derive(Debug, Default)]
pub struct Blockers(pub Vec<Blocker>);

impl Blockers {
    pub fn add(&mut self, op: impl Into<String>, reason: impl Into<String>) {
        let (op, reason) = (op.into(), reason.into());
        match self.0.iter_mut().find(|b| b.op == op && b.reason == reason) {
            Some(b) => b.count += 1,
            None => self.0.push(Blocker {
                op,
                reason,
                count: 1,
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not a well-formed model of the format.
    #[error("not a valid {format} model: {reason}")]
    Malformed {
        format: &'static str,
        reason: String,
    },
    /// The model is well-formed but uses operators or features this engine does not run.
    #[error("{}", unsupported_message(.0))]
    Unsupported(Vec<Blocker>),
    /// Something about the model is too large to plan safely.
    #[error("the model is too large: {0}")]
    TooLarge(String),
    /// A load option does not fit the model.
    #[error("bad load option: {0}")]
    Options(String),
}

fn unsupported_message(blockers: &[Blocker]) -> String {
    let list: Vec<String> = blockers.iter().map(ToString::to_string).collect();
    format!("unsupported: {}", list.join("; "))
}

impl LoadError {
    pub fn malformed(format: &'static str, reason: impl fmt::Display) -> LoadError {
        LoadError::Malformed {
            format,
            reason: reason.to_string(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error("input {index}: {reason}")]
    Input { index: usize, reason: String },
    #[error("cannot plan for these input shapes: {0}")]
    Plan(String),
    #[error("{op}: {reason}")]
    Kernel { op: String, reason: String },
}
