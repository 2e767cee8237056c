//! Fuzz the ONNX reader and planner. Model check: any bytes give a model or an error, never
//! a panic; a model that loads plans (or refuses to) for its declared input shapes and, if it
//! plans, runs on zeros without panicking.
#![no_main]

use aq_engine::{Model, Options};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = Options {
        max_arena_bytes: 64 << 20,
        ..Options::default()
    };
    let Ok(model) = Model::from_onnx(data, &Default::default(), &options) else {
        return;
    };
    let inputs = model.zero_inputs(1 << 20);
    if let Some(inputs) = inputs {
        let _ = model.run(&inputs);
    }
});
