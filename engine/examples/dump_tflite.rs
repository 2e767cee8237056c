//! Development aid: runs a TFLite model with every computed value as an output and writes
//! each one as NAME.bin (for comparing intermediates with LiteRT).
//! usage: dump_tflite MODEL OUT_DIR INPUT.bin...
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::unwrap_used,
    clippy::expect_used
)]

use aq_engine::{Data, Model, Options, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&args[1]).unwrap();
    let mut graph = aq_engine::tflite::read(&bytes).unwrap();
    let computed: Vec<usize> = graph.nodes.iter().flat_map(|n| n.outputs.clone()).collect();
    graph.outputs = computed;
    let model = Model::from_graph(graph.clone(), &Options::default()).unwrap();
    let inputs: Vec<Tensor> = model
        .inputs()
        .iter()
        .enumerate()
        .map(|(k, info)| {
            let shape: Vec<usize> = info.shape.iter().map(|d| d.unwrap_or(1)).collect();
            let bytes = std::fs::read(&args[3 + k]).unwrap();
            Tensor::new(shape, Data::from_le_bytes(info.dtype, &bytes).unwrap()).unwrap()
        })
        .collect();
    let out = model.run(&inputs).unwrap();
    let dir = std::path::Path::new(&args[2]);
    for (info, t) in model.outputs().iter().zip(&out) {
        let name = format!(
            "{:016x}",
            info.name
                .bytes()
                .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b))
                    .wrapping_mul(0x100000001b3))
        );
        std::fs::write(dir.join(format!("{name}.bin")), t.data.to_le_bytes()).unwrap();
    }
    println!("{}", out.len());
}
