//! tract can panic on some models (failed internal assertions); every call into it from a
//! pass runs inside [`guarded`] or [`guarded_with`], so a hostile model gives an error, not a
//! dead `aq`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use tract_onnx::prelude::{TractError, TractResult};

use crate::error::ExportError;

fn message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

/// Runs `f`, turning a panic inside tract into a tract error.
pub(crate) fn guarded<T>(f: impl FnOnce() -> TractResult<T>) -> TractResult<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(TractError::msg(format!(
            "tract panicked: {}",
            message(panic.as_ref())
        ))),
    }
}

/// Runs `f`, turning a panic into the error `on_panic` makes of its message.
pub(crate) fn guarded_with<T>(
    f: impl FnOnce() -> Result<T, ExportError>,
    on_panic: impl FnOnce(String) -> ExportError,
) -> Result<T, ExportError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(panic) => Err(on_panic(message(panic.as_ref()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let e = guarded::<()>(|| panic!("index out of bounds")).unwrap_err();
        assert!(format!("{e}").contains("tract panicked: index out of bounds"));
        let e = guarded_with::<()>(
            || panic!("{}", String::from("assertion failed")),
            ExportError::Source,
        )
        .unwrap_err();
        assert!(matches!(e, ExportError::Source(m) if m == "assertion failed"));
        assert_eq!(guarded(|| Ok(3)).unwrap(), 3);
    }
}
