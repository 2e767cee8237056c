//! Calibration inputs: `.npy` arrays split into samples of a model input's fixed shape.

use tract_onnx::prelude::*;

use crate::error::ExportError;
use crate::npy::Array;

/// Splits `arrays` into tensors of shape `want` for the input `name`: each array is either one
/// sample of shape `want` or, for an input of batch 1, a stack `[N, ...]` of N samples.
pub(crate) fn samples(
    name: &str,
    want: &[usize],
    arrays: &[Array],
) -> Result<Vec<Tensor>, ExportError> {
    let per_sample: usize = want.iter().product();
    let mut samples = Vec::new();
    for (i, array) in arrays.iter().enumerate() {
        let stacked = want.first() == Some(&1)
            && array.shape.len() == want.len()
            && array.shape[1..] == want[1..];
        if array.shape != want && !stacked {
            return Err(ExportError::Calibration(format!(
                "array {i} has shape {:?}; input {name:?} takes {want:?} (or a stack [N, ...] of them)",
                array.shape
            )));
        }
        for values in array.values.chunks_exact(per_sample.max(1)) {
            let t = Tensor::from_shape(want, values)
                .map_err(|e| ExportError::Calibration(format!("{e:#}")))?;
            samples.push(t);
        }
    }
    if samples.is_empty() {
        return Err(ExportError::Calibration("no calibration inputs".into()));
    }
    Ok(samples)
}
