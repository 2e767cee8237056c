//! `aq optimize quantize`: an int8 ONNX variant of a pack's model, made with ops tract runs.

use anyhow::Context;
use aq_pack::manifest::{ModelFormat, ModelInfo};
use serde::Serialize;

use crate::cli::{QuantizeArgs, QuantizeMode};
use crate::exit::{ExitCode, user_error};
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
    /// For static: how many calibration inputs set the activation ranges.
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration_inputs: Option<usize>,
}

pub fn quantize(args: QuantizeArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let variant = "onnx-int8";
    let shapes = super::export::parse_input_shapes(&args.input_shapes)?;
    // Calibration inputs are read before the registry is touched: a bad directory changes
    // nothing.
    let calibration = match (args.mode, &args.calibration) {
        (QuantizeMode::Static, Some(dir)) => Some(super::export::read_calibration(dir)?),
        (QuantizeMode::Static, None) => {
            return Err(user_error(
                ExitCode::InvalidInput,
                "--mode static needs --calibration DIR",
            ));
        }
        (QuantizeMode::Dynamic, _)
            if args.calibration.is_some() || !args.input_shapes.is_empty() =>
        {
            return Err(user_error(
                ExitCode::InvalidInput,
                "--calibration and --input-shape are for --mode static",
            ));
        }
        (QuantizeMode::Dynamic, _) => None,
    };
    let source = super::variant::open(&args.reference, variant, args.key.as_deref(), settings)?;
    let manifest = source.stored.manifest();
    let (mode, quantized) = match &calibration {
        None => (
            "dynamic",
            aq_optimize::onnx_quant::quantize_dynamic(&source.onnx),
        ),
        Some(arrays) => (
            "static",
            aq_optimize::onnx_quant::quantize_static(&source.onnx, &shapes, arrays),
        ),
    };
    let quantized = quantized.with_context(|| format!("cannot quantize {}", manifest.id()))?;
    let note = match calibration {
        None => "int8 dynamic: weights per output channel, activations per tensor at run time"
            .to_owned(),
        Some(_) => format!(
            "int8 static: weights per output channel, uint8 activations per tensor calibrated on {} inputs",
            quantized.calibration_samples
        ),
    };
    let notes = [("quantization".to_owned(), note)];
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
        calibration_inputs: (mode == "static").then_some(quantized.calibration_samples),
    };
    printer.result(&report, || {
        format!(
            "Quantized {} ({mode}) to {variant}: {} ({:.2}x of {})\n  nodes   {}{}\n  digest  {}",
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
            report
                .calibration_inputs
                .map(|n| format!("\n  calibrated on {n} inputs"))
                .unwrap_or_default(),
            report.digest
        )
    });
    Ok(())
}
