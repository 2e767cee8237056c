//! Hostile TFLite and ONNX files: real models cut short, with bytes flipped, and with
//! offsets, lengths, varints and dimensions replaced by huge values. Every one must give a model or an error; none may
//! panic or make the engine allocate what the file declares (plans have a memory limit, here
//! 64 MiB).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use aq_engine::{Model, Options};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/models")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Loads, plans and runs on zeros; `Err` carries a panic's message.
fn exercise(bytes: &[u8], onnx: bool) -> Result<(), String> {
    let options = Options {
        max_arena_bytes: 64 << 20,
        ..Options::default()
    };
    catch_unwind(AssertUnwindSafe(|| {
        let loaded = if onnx {
            Model::from_onnx(bytes, &Default::default(), &options)
        } else {
            let _ = aq_engine::tflite::io(bytes);
            Model::from_tflite(bytes, &options)
        };
        let Ok(model) = loaded else {
            return;
        };
        if let Some(inputs) = model.zero_inputs(1 << 20) {
            let _ = model.run(&inputs);
        }
    }))
    .map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default()
    })
}

const MODELS: [&str; 6] = [
    "sine_float.tflite",
    "okay_nabu.tflite",
    "selfie_segmentation.tflite",
    "ppocr_cls.onnx",
    "erf_round.onnx",
    "squeezenet_light.onnx",
];

#[test]
fn truncated_files_give_errors_not_panics() {
    for name in MODELS {
        let bytes = fixture(name);
        let cuts = (0..64).chain((0..200).map(|i| i * bytes.len() / 200));
        for cut in cuts {
            if let Err(panic) = exercise(&bytes[..cut.min(bytes.len())], name.ends_with(".onnx")) {
                panic!("{name} cut at {cut}: {panic}");
            }
        }
    }
}

#[test]
fn corrupted_files_give_errors_not_panics() {
    let mut rng = aq_test_support::XorShift::new(0x5eed);
    let hostile_words = [u32::MAX, 0x7fff_ffff, 0x8000_0000, 0x0100_0000, 0xffff, 0];
    for name in MODELS {
        let original = fixture(name);
        // Fewer mutants of the larger model keep the test quick.
        let count = if original.len() > 100_000 { 300 } else { 1500 };
        for i in 0..count {
            let mut bytes = original.clone();
            let at = rng.next_u64() as usize % bytes.len().saturating_sub(4).max(1);
            match i % 3 {
                0 => bytes[at] ^= 1 << (rng.next_u64() % 8),
                1 => {
                    let word = hostile_words[rng.next_u64() as usize % hostile_words.len()];
                    bytes[at..at + 4].copy_from_slice(&word.to_le_bytes());
                }
                _ => {
                    for b in bytes
                        .iter_mut()
                        .skip(at)
                        .take(1 + rng.next_u64() as usize % 16)
                    {
                        *b = rng.next_u64() as u8;
                    }
                }
            }
            if let Err(panic) = exercise(&bytes, name.ends_with(".onnx")) {
                panic!("{name} mutant {i} (at byte {at}): {panic}");
            }
        }
    }
}

#[test]
fn plans_past_the_memory_limit_are_refused_before_anything_is_allocated() {
    // sine_float takes any number of rows: ask for 2^28 of them (1 GiB of input alone).
    let options = Options {
        max_arena_bytes: 64 << 20,
        ..Options::default()
    };
    let model = Model::from_tflite(&fixture("sine_float.tflite"), &options).unwrap();
    assert_eq!(model.inputs()[0].shape, [None, Some(1)]);
    let err = model.plan(&[vec![1 << 28, 1]]).unwrap_err();
    assert!(err.to_string().contains("memory limit"), "{err}");
    // The same model plans a modest batch under the same limit.
    model.plan(&[vec![1024, 1]]).unwrap();
}

/// A protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(tag: u32, wire: u8, out: &mut Vec<u8>) {
    varint(u64::from(tag << 3 | u32::from(wire)), out);
}

fn bytes_field(tag: u32, payload: &[u8], out: &mut Vec<u8>) {
    field(tag, 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// An ONNX model of one ConstantOfShape node filling `dims`, its output the graph output.
fn constant_of_shape(dims: &[i64]) -> Vec<u8> {
    let mut shape = Vec::new();
    field(1, 0, &mut shape); // TensorProto.dims: [rank]
    varint(dims.len() as u64, &mut shape);
    field(2, 0, &mut shape); // data_type = INT64
    varint(7, &mut shape);
    let mut raw = Vec::new();
    for &d in dims {
        raw.extend_from_slice(&d.to_le_bytes());
    }
    bytes_field(9, &raw, &mut shape); // raw_data
    bytes_field(8, b"shape", &mut shape); // name
    let mut node = Vec::new();
    bytes_field(1, b"shape", &mut node);
    bytes_field(2, b"y", &mut node);
    bytes_field(4, b"ConstantOfShape", &mut node);
    let mut output = Vec::new();
    bytes_field(1, b"y", &mut output);
    let mut graph = Vec::new();
    bytes_field(1, &node, &mut graph);
    bytes_field(5, &shape, &mut graph);
    bytes_field(12, &output, &mut graph);
    let mut opset = Vec::new();
    field(2, 0, &mut opset);
    varint(17, &mut opset);
    let mut model = Vec::new();
    field(1, 0, &mut model);
    varint(8, &mut model);
    bytes_field(8, &opset, &mut model);
    bytes_field(7, &graph, &mut model);
    model
}

#[test]
fn onnx_constants_of_declared_huge_sizes_are_refused_not_allocated() {
    // A modest constant loads (the builder is right) ...
    let model = Model::from_onnx(
        &constant_of_shape(&[2, 3]),
        &Default::default(),
        &Options::default(),
    )
    .unwrap();
    assert_eq!(model.outputs()[0].shape, [Some(2), Some(3)]);
    // ... one of 2^40 elements is refused by name, with nothing allocated.
    let err = Model::from_onnx(
        &constant_of_shape(&[1 << 20, 1 << 20]),
        &Default::default(),
        &Options::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("ConstantOfShape") && err.to_string().contains("too large"),
        "{err}"
    );
    // An initializer declaring 2^40 elements and holding none is malformed, not allocated.
    let mut tensor = Vec::new();
    for d in [1u64 << 20, 1 << 20] {
        field(1, 0, &mut tensor);
        varint(d, &mut tensor);
    }
    field(2, 0, &mut tensor);
    varint(1, &mut tensor);
    bytes_field(8, b"w", &mut tensor);
    let mut graph = Vec::new();
    bytes_field(5, &tensor, &mut graph);
    let mut model = Vec::new();
    bytes_field(7, &graph, &mut model);
    let err = Model::from_onnx(&model, &Default::default(), &Options::default()).unwrap_err();
    assert!(err.to_string().contains("elements"), "{err}");
}

/// Inputs the fuzz target `onnx_reader` found that once panicked the reader (kept here so
/// they run on every `cargo test`): an elementwise node with no inputs.
#[test]
fn fuzzer_findings_give_errors_not_panics() {
    let elementwise_without_inputs: &[u8] = &[
        8, 8, 58, 117, 10, 18, 10, 1, 120, 18, 3, 101, 114, 102, 26, 3, 101, 114, 102, 34, 3, 58,
        114, 102, 10, 27, 26, 3, 101, 114, 102, 26, 3, 111, 110, 117, 26, 4, 112, 108, 117, 115,
        26, 4, 96, 108, 117, 115, 34, 3, 65, 100, 100, 10, 19, 10, 4, 112, 108, 117, 115, 18, 1,
        46, 26, 1, 121, 34, 5, 82, 111, 117, 110, 100, 18, 1, 103, 42, 16, 10, 1, 1, 16, 1, 34, 4,
        0, 0, 128, 63, 66, 3, 111, 110, 101, 90, 19, 10, 1, 120, 18, 14, 10, 12, 8, 1, 18, 8, 10,
        2, 8, 1, 10, 2, 8, 4, 98, 3, 10, 1, 121, 66, 2, 16, 17,
    ];
    exercise(elementwise_without_inputs, true).unwrap();
    assert!(
        Model::from_onnx(
            elementwise_without_inputs,
            &Default::default(),
            &Options::default()
        )
        .is_err()
    );
}
