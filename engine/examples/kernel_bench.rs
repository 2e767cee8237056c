//! Development aid: times single convolutions (f32 and int8) of MobileNet-like shapes.
//! usage: kernel_bench
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::sync::Arc;

use aq_engine::graph::{Activation, Conv2d, Depthwise, Graph, Node, Op, Padding, Quant, Value};
use aq_engine::{DType, Data, Model, Options, Tensor};

fn value(
    g: &mut Graph,
    name: &str,
    dtype: DType,
    shape: &[usize],
    quant: Option<Quant>,
    data: Option<Data>,
) -> usize {
    g.add_value(Value {
        name: name.into(),
        dtype,
        shape: shape.iter().map(|d| Some(*d)).collect(),
        quant,
        constant: data.map(Arc::new),
    })
}

fn conv_graph(
    h: usize,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    depthwise: bool,
    int8: bool,
) -> Graph {
    let mut g = Graph::default();
    let dt = if int8 { DType::I8 } else { DType::F32 };
    let q = |s: f32, z: i32| int8.then(|| Quant::per_tensor(s, z));
    let x = value(&mut g, "x", dt, &[1, h, h, cin], q(0.02, -3), None);
    let wshape = if depthwise {
        vec![1, k, k, cin]
    } else {
        vec![cout, k, k, cin]
    };
    let n: usize = wshape.iter().product();
    let wdata = if int8 {
        Data::I8((0..n).map(|i| ((i * 37) % 255) as i8).collect())
    } else {
        Data::F32(
            (0..n)
                .map(|i| ((i * 37) % 255) as f32 / 255.0 - 0.5)
                .collect(),
        )
    };
    let wq = int8.then(|| Quant {
        scale: vec![0.01; wshape[if depthwise { 3 } else { 0 }]],
        zero_point: vec![0; wshape[if depthwise { 3 } else { 0 }]],
        axis: if depthwise { 3 } else { 0 },
    });
    let w = value(&mut g, "w", dt, &wshape, wq, Some(wdata));
    let nb = if depthwise { cin } else { cout };
    let b = if int8 {
        value(
            &mut g,
            "b",
            DType::I32,
            &[nb],
            None,
            Some(Data::I32(vec![100; nb])),
        )
    } else {
        value(
            &mut g,
            "b",
            DType::F32,
            &[nb],
            None,
            Some(Data::F32(vec![0.1; nb])),
        )
    };
    let oh = h.div_ceil(stride);
    let y = value(
        &mut g,
        "y",
        dt,
        &[1, oh, oh, if depthwise { cin } else { cout }],
        q(0.05, 2),
        None,
    );
    let op = if depthwise {
        Op::Depthwise(Depthwise {
            stride: (stride, stride),
            dilation: (1, 1),
            padding: Padding::Same,
            multiplier: 1,
            activation: Activation::Relu6,
        })
    } else {
        Op::Conv2d(Conv2d {
            stride: (stride, stride),
            dilation: (1, 1),
            padding: Padding::Same,
            groups: 1,
            activation: Activation::Relu6,
        })
    };
    g.nodes.push(Node {
        op,
        inputs: vec![x, w, b],
        outputs: vec![y],
        origin: "conv".into(),
    });
    g.inputs = vec![x];
    g.outputs = vec![y];
    g
}

fn main() {
    let cases = [
        ("first 3x3 s2 3->32 @224", 224, 3, 32, 3, 2, false),
        ("1x1 32->16 @112", 112, 32, 16, 1, 1, false),
        ("1x1 16->96 @112", 112, 16, 96, 1, 1, false),
        ("1x1 96->24 @56", 56, 96, 24, 1, 1, false),
        ("1x1 144->24 @56", 56, 144, 24, 1, 1, false),
        ("1x1 384->64 @14", 14, 384, 64, 1, 1, false),
        ("1x1 960->320 @7", 7, 960, 320, 1, 1, false),
        ("dw 3x3 32 @112", 112, 32, 32, 3, 1, true),
        ("dw 3x3 s2 96 @112", 112, 96, 96, 3, 2, true),
        ("dw 3x3 144 @56", 56, 144, 144, 3, 1, true),
        ("dw 3x3 960 @7", 7, 960, 960, 3, 1, true),
    ];
    let only = std::env::args().nth(1);
    for int8 in [false, true] {
        for (name, h, cin, cout, k, s, dw) in cases {
            if only.as_deref().is_some_and(|o| {
                !name.contains(o.trim_start_matches("int8 ")) || (o.starts_with("int8") != int8)
            }) {
                continue;
            }
            let g = conv_graph(h, cin, cout, k, s, dw, int8);
            let model = Model::from_graph(g, &Options::default()).unwrap();
            let info = &model.inputs()[0];
            let shape: Vec<usize> = info.shape.iter().map(|d| d.unwrap()).collect();
            let n: usize = shape.iter().product();
            let data = if int8 {
                Data::I8((0..n).map(|i| (i % 200) as i8).collect())
            } else {
                Data::F32((0..n).map(|i| (i % 200) as f32 / 100.0 - 1.0).collect())
            };
            let x = Tensor::new(shape, data).unwrap();
            for _ in 0..5 {
                model.run(std::slice::from_ref(&x)).unwrap();
            }
            // Kernel time only (the step), not the copies in and out of a run.
            let reps = std::env::var("REPS")
                .ok()
                .and_then(|r| r.parse().ok())
                .unwrap_or(30);
            let mut t: Vec<f64> = (0..reps)
                .map(|_| {
                    model.profile(std::slice::from_ref(&x), 1).unwrap()[0]
                        .1
                        .as_secs_f64()
                        * 1e3
                })
                .collect();
            t.sort_by(f64::total_cmp);
            let oh = h.div_ceil(s);
            let macs = (oh * oh * cout * k * k * if dw { 1 } else { cin }) as f64;
            let mid = t[0];
            println!(
                "{} {name:28} {:8.3} ms  {:6.1} GMAC/s",
                if int8 { "int8" } else { "f32 " },
                mid,
                macs / mid / 1e6
            );
        }
    }
}
