//! Fuzz the serving request decoders (binary tensors, v1 JSON, OIP v2 with the binary-data
//! extension) against a fixed signature. Model check: a binary body that decodes re-encodes
//! to exactly the input; every decoded tensor's byte length fits its shape; no decoder panics.
#![no_main]

use aq_runtime::{Axis, DType, EngineSignature, IoSpec};
use aq_serve::codec::{binary, json, v2};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fn signature() -> EngineSignature {
    EngineSignature {
        inputs: vec![IoSpec { name: "x".into(), dtype: DType::F32, shape: vec![Axis::Batch, Axis::Fixed(2)] }],
        outputs: vec![IoSpec { name: "y".into(), dtype: DType::F32, shape: vec![Axis::Batch, Axis::Fixed(2)] }],
    }
}

fn fits(t: &aq_runtime::Tensor) {
    let count = aq_runtime::element_count(t.shape()).expect("decoded shape overflows");
    assert_eq!(t.bytes().len(), count * t.dtype().size());
}

fuzz_target!(|data: &[u8]| {
    let sig = signature();
    let body = Bytes::copy_from_slice(data);
    if let Ok(tensors) = binary::decode(&body) {
        tensors.iter().for_each(|(_, t)| fits(t));
        let again = binary::encode(tensors.iter().map(|(n, t)| (n.as_str(), t)));
        assert_eq!(again, data, "binary decode then encode changed the body");
    }
    if let Ok(request) = json::decode(data, &sig) {
        request.inputs.iter().for_each(|(_, t)| fits(t));
    }
    // The first byte picks a header length for the binary-data extension.
    let header = data.first().map(|b| usize::from(*b)).filter(|n| *n < data.len());
    for length in [None, header] {
        if let Ok(request) = v2::decode(&body, length, &sig) {
            request.inputs.iter().for_each(|(_, t)| fits(t));
        }
    }
});
