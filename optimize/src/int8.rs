//! Symmetric int8 weights with one scale per output channel, shared by the TFLite and ONNX
//! quantizers.

/// Quantizes `values` (C order) whose channel index is `(i / inner) % channels`: each channel
/// gets the scale `max|w| / levels` and values rounded into [-levels, levels] (127 for full
/// int8; 63 for 7-bit weights, see `onnx_quant`). Returns the int8 bytes and the scales.
/// `channels` and `inner` of 0 count as 1.
pub(crate) fn symmetric_per_channel(
    values: &[f32],
    channels: usize,
    inner: usize,
    levels: u8,
) -> (Vec<u8>, Vec<f32>) {
    let levels = f32::from(levels.clamp(1, 127));
    let (channels, inner) = (channels.max(1), inner.max(1));
    let channel_of = |i: usize| (i / inner) % channels;
    let mut max_abs = vec![0f32; channels];
    for (i, v) in values.iter().enumerate() {
        let c = channel_of(i);
        max_abs[c] = max_abs[c].max(v.abs());
    }
    // All-zero channels get a tiny scale rather than a division by zero.
    let scales: Vec<f32> = max_abs.iter().map(|m| (m / levels).max(1e-8)).collect();
    let data = values
        .iter()
        .enumerate()
        .map(|(i, v)| (v / scales[channel_of(i)]).round().clamp(-levels, levels) as i8 as u8)
        .collect();
    (data, scales)
}
