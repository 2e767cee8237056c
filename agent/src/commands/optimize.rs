//! `aq optimize quantize`: an int8 ONNX variant of a pack's model, made with ops tract runs.

use anyhow::Context;
use aq_pack::manifest::{ModelFormat, ModelInfo};
use serde::Serialize;

use crate::cli::{QuantizeArgs, QuantizeMode};
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct QuantizeReport {
    source: String,
    variant: &'static str,
    mode: &'static str,
    digest: String,
    bytes: usize,
    source_bytes: usize,
    quantized_nodes: std::collections::BTreeMap<String, usize>,
}

pub fn quantize(args: QuantizeArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let variant = "onnx-int8";
    let mode = match args.mode {
        QuantizeMode::Dynamic => "dynamic",
    };
    let source = super::variant::open(&args.reference, variant, args.key.as_deref(), settings)?;
    let manifest = source.stored.manifest();
    let quantized = aq_optimize::onnx_quant::quantize_dynamic(&source.onnx)
        .with_context(|| format!("cannot quantize {}", manifest.id()))?;
    let notes = [(
        "quantization".to_owned(),
        "int8 dynamic: weights per output channel, activations per tensor at run time".to_owned(),
    )];
    let import = source.record(
        variant,
        "model.onnx",
        ModelInfo {
            format: ModelFormat::Onnx,
            entry: String::new(),
            inputs: manifest.model.inputs.clone(),
            outputs: manifest.model.outputs.clone(),
        },
        &quantized.bytes,
        notes.into(),
    )?;
    let report = QuantizeReport {
        source: manifest.id(),
        variant,
        mode,
        digest: import.digest,
        bytes: quantized.bytes.len(),
        source_bytes: source.onnx.len(),
        quantized_nodes: quantized.quantized.into_iter().collect(),
    };
    printer.result(&report, || {
        format!(
            "Quantized {} ({mode}) to {variant}: {} ({:.2}x of {})\n  nodes   {}\n  digest  {}",
            report.source,
            human_bytes(report.bytes as u64),
            report.bytes as f64 / report.source_bytes as f64,
            human_bytes(report.source_bytes as u64),
            report
                .quantized_nodes
                .iter()
                .map(|(op, n)| format!("{op}×{n}"))
                .collect::<Vec<_>>()
                .join(" "),
            report.digest
        )
    });
    Ok(())
}
