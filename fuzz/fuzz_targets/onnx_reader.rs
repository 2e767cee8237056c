//! Fuzz the ONNX reader and planner. Model check: any bytes give a model or an error, never
//! a panic; a model that loads plans (or refuses to) for its declared input shapes and, if it
//! plans, runs on zeros without panicking.
#![no_main]

use aq_engine::{Data, Model, Options, Tensor, element_count};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = Options {
        max_arena_bytes: 64 << 20,
        ..Options::default()
    };
    let Ok(model) = Model::from_onnx(data, &Default::default(), &options) else {
        return;
    };
    let inputs: Option<Vec<Tensor>> = model
        .inputs()
        .iter()
        .map(|io| {
            let shape: Vec<usize> = io.shape.iter().map(|d| d.unwrap_or(1)).collect();
            let n = element_count(&shape).filter(|n| *n <= 1 << 20)?;
            Tensor::new(shape, Data::zeros(io.dtype, n))
        })
        .collect();
    if let Some(inputs) = inputs {
        let _ = model.run(&inputs);
    }
});
