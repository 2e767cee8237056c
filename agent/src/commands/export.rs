//! `aq export`: convert a pack's model (or an ONNX file) for another runtime. From a pack, the
//! result is recorded as a signed variant of the same `name:version`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use aq_optimize::InputShapes;
use aq_pack::manifest::{ModelFormat, ModelInfo, TensorSpec};
use serde::Serialize;

use crate::cli::{ExportTarget, ModelExportArgs, Quantize};
use crate::daemon::config::write_atomic;
use crate::exit::{ExitCode, user_error};
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

#[derive(Debug, Serialize)]
struct ExportReport {
    source: String,
    target: &'static str,
    /// The variant recorded in the pack (absent for a file source).
    variant: Option<String>,
    /// The pack's new digest, once the variant is recorded.
    digest: Option<String>,
    output: Option<String>,
    bytes: usize,
    /// Largest output difference, tract on the source against tract on the fp32 export.
    self_check_max_abs: f32,
    /// For int8: size of the fp32 export it was quantized from, and the calibration inputs.
    fp32_bytes: Option<usize>,
    calibration_inputs: Option<usize>,
    ops: BTreeMap<String, usize>,
}

impl ExportReport {
    /// `digest` is the pack's new digest when the export was recorded as a variant.
    fn new(
        source: String,
        target: &'static str,
        exported: aq_optimize::tflite::Exported,
        digest: Option<String>,
        output: Option<&Path>,
    ) -> ExportReport {
        ExportReport {
            source,
            target,
            variant: digest.as_ref().map(|_| target.to_owned()),
            digest,
            output: output.map(|p| p.display().to_string()),
            bytes: exported.bytes.len(),
            self_check_max_abs: exported.self_check_max_abs,
            fp32_bytes: exported.fp32_bytes,
            calibration_inputs: exported.fp32_bytes.map(|_| exported.calibration_samples),
            ops: exported.ops,
        }
    }
}

pub fn run(args: ModelExportArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    if matches!(
        args.target,
        ExportTarget::Triton | ExportTarget::Torchserve | ExportTarget::Bentoml
    ) {
        return layout(&args, settings, printer);
    }
    let shapes = parse_input_shapes(&args.input_shapes)?;
    let (variant_name, file_name) = match (args.target, args.quantize) {
        (ExportTarget::Tflite, None) => ("tflite-fp32", "model.tflite"),
        (ExportTarget::Tflite, Some(Quantize::Int8)) => ("tflite-int8", "model.tflite"),
        (ExportTarget::Triton | ExportTarget::Torchserve | ExportTarget::Bentoml, _) => {
            unreachable!("handled above")
        }
    };
    let calibration = match &args.calibration {
        Some(dir) => Some(read_calibration(dir)?),
        None => None,
    };
    let convert = |onnx: &[u8]| match &calibration {
        Some(arrays) => aq_optimize::tflite::export_int8(onnx, &shapes, arrays),
        None => aq_optimize::tflite::export(onnx, &shapes),
    };
    let source_path = Path::new(&args.source);
    if source_path.is_file() {
        let output = args.output.as_deref().ok_or_else(|| {
            user_error(
                ExitCode::InvalidInput,
                "exporting a model file needs --output FILE (only a pack records a variant)",
            )
        })?;
        let onnx = std::fs::read(source_path)
            .with_context(|| format!("failed to read {}", source_path.display()))?;
        let exported =
            convert(&onnx).with_context(|| format!("cannot export {}", source_path.display()))?;
        write_atomic(output, &exported.bytes, false)?;
        let report = ExportReport::new(
            args.source.clone(),
            variant_name,
            exported,
            None,
            Some(output),
        );
        printer.result(&report, || human(&report));
        return Ok(());
    }

    let source = super::variant::open(&args.source, variant_name, args.key.as_deref(), settings)?;
    let exported = convert(&source.onnx)
        .with_context(|| format!("cannot export {}", source.stored.manifest().id()))?;
    let notes = [
        (
            "self_check_max_abs".to_owned(),
            format!("{:.1e}", exported.self_check_max_abs),
        ),
        (
            "quantization".to_owned(),
            match exported.fp32_bytes {
                Some(_) => format!(
                    "int8 full-integer, per-channel weights, calibrated on {} inputs",
                    exported.calibration_samples
                ),
                None => "none (fp32)".to_owned(),
            },
        ),
        (
            "input_shapes".to_owned(),
            exported
                .inputs
                .iter()
                .map(|t| format!("{}={:?}", t.name, t.shape))
                .collect::<Vec<_>>()
                .join(" "),
        ),
    ];
    let import = source.record(
        variant_name,
        file_name,
        ModelInfo {
            format: ModelFormat::Tflite,
            entry: String::new(),
            inputs: specs(&exported.inputs),
            outputs: specs(&exported.outputs),
        },
        &exported.bytes,
        notes.into(),
    )?;
    if let Some(output) = &args.output {
        write_atomic(output, &exported.bytes, false)?;
    }
    let manifest = source.stored.manifest();
    let report = ExportReport::new(
        manifest.id(),
        variant_name,
        exported,
        Some(import.digest),
        args.output.as_deref(),
    );
    printer.result(&report, || human(&report));
    Ok(())
}

#[derive(Debug, Serialize)]
struct LayoutReport {
    source: String,
    target: &'static str,
    files: Vec<String>,
}

/// `--target triton|torchserve|bentoml`: the pack's ONNX model (or an ONNX file) laid out for
/// another serving stack. Triton: a model repository entry under `--output`; BentoML: a model
/// store entry under `--output` (a `BENTOML_HOME`). For both, a version directory that exists
/// already is a conflict. TorchServe: a `.mar` file at `--output`.
fn layout(args: &ModelExportArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let target = match args.target {
        ExportTarget::Triton => "triton",
        ExportTarget::Torchserve => "torchserve",
        _ => "bentoml",
    };
    let out = args.output.as_deref().ok_or_else(|| {
        user_error(
            ExitCode::InvalidInput,
            format!(
                "--target {target} needs --output (triton: the model repository, bentoml: the BENTOML_HOME directory, torchserve: the .mar file)"
            ),
        )
    })?;
    if args.quantize.is_some() || !args.input_shapes.is_empty() {
        return Err(user_error(
            ExitCode::InvalidInput,
            format!(
                "--target {target} serves the ONNX model as it is: no --quantize or --input-shape"
            ),
        ));
    }
    let source_path = Path::new(&args.source);
    let (model, source) = if source_path.is_file() {
        let onnx = std::fs::read(source_path)
            .with_context(|| format!("failed to read {}", source_path.display()))?;
        let signature = aq_runtime::inspect(source_path)
            .with_context(|| format!("failed to inspect {}", source_path.display()))?;
        let name = source_path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_owned();
        let model = layout_model(
            name,
            semver::Version::new(1, 0, 0),
            onnx,
            &signature.inputs,
            &signature.outputs,
        );
        (model, args.source.clone())
    } else {
        let reference = super::parse_ref(&args.source)?;
        let registry = super::open_registry(settings)?;
        let stored = registry.get(&reference)?;
        let manifest = stored.manifest();
        if manifest.model.format != ModelFormat::Onnx {
            return Err(user_error(
                ExitCode::InvalidInput,
                format!(
                    "{} holds a {} model; Triton's ONNX Runtime backend takes ONNX",
                    manifest.id(),
                    manifest.model.format
                ),
            ));
        }
        let mut onnx = Vec::new();
        registry.write_file(manifest, &manifest.model.entry, &mut onnx)?;
        let model = layout_model(
            manifest.name.clone(),
            manifest.version.clone(),
            onnx,
            &manifest.model.inputs,
            &manifest.model.outputs,
        );
        (model, manifest.id())
    };
    if args.target == ExportTarget::Torchserve {
        let mar = aq_optimize::layout::torchserve(
            &model,
            &torchserve_time(std::time::SystemTime::now()),
        )?;
        write_atomic(out, &mar, false)?;
        let report = LayoutReport {
            source,
            target,
            files: vec![out.display().to_string()],
        };
        printer.result(&report, || {
            format!(
                "Exported {} for TorchServe\n  {}",
                report.source, report.files[0]
            )
        });
        return Ok(());
    }
    let files = if args.target == ExportTarget::Triton {
        aq_optimize::layout::triton(&model, args.max_batch, 2000)?
    } else {
        let created = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        aq_optimize::layout::bentoml(&model, &created)?
    };
    // The version directory (the model file's) appears whole: its files are written beside
    // it, then renamed into place; one that exists already is a conflict.
    let version_dir = files
        .iter()
        .find(|(path, _)| path.ends_with(".onnx"))
        .and_then(|(path, _)| Path::new(path).parent())
        .map(|p| out.join(p))
        .ok_or_else(|| anyhow::anyhow!("the layout has no model file"))?;
    if version_dir.exists() {
        return Err(user_error(
            ExitCode::Conflict,
            format!("{} exists already", version_dir.display()),
        ));
    }
    let staging = version_dir.with_extension("aq-partial");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .with_context(|| format!("failed to create {}", staging.display()))?;
    let mut written = Vec::new();
    for (path, bytes) in &files {
        let final_path = out.join(path);
        if final_path.parent() == Some(version_dir.as_path()) {
            let name = final_path.file_name().unwrap_or_default();
            write_atomic(&staging.join(name), bytes, false)?;
        }
        written.push(final_path.display().to_string());
    }
    std::fs::rename(&staging, &version_dir)
        .with_context(|| format!("failed to create {}", version_dir.display()))?;
    // Then what points at versions (Triton's config, BentoML's `latest`), replaced atomically.
    for (path, bytes) in &files {
        let final_path = out.join(path);
        if final_path.parent() != Some(version_dir.as_path()) {
            if let Some(dir) = final_path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("failed to create {}", dir.display()))?;
            }
            write_atomic(&final_path, bytes, false)?;
        }
    }
    let report = LayoutReport {
        source,
        target,
        files: written,
    };
    printer.result(&report, || {
        format!(
            "Exported {} for {}\n{}",
            report.source,
            report.target,
            report
                .files
                .iter()
                .map(|f| format!("  {f}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    });
    Ok(())
}

/// `27/11/2026 17:55:01` (UTC): torch-model-archiver's `createdOn` format.
fn torchserve_time(now: std::time::SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(now).to_string(); // 2026-11-27T17:55:01Z
    let (date, time) = rfc
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or((&rfc, ""));
    let parts: Vec<&str> = date.split('-').collect();
    match parts[..] {
        [y, m, d] => format!("{d}/{m}/{y} {time}"),
        _ => rfc.clone(),
    }
}

fn layout_model(
    name: String,
    version: semver::Version,
    onnx: Vec<u8>,
    inputs: &[TensorSpec],
    outputs: &[TensorSpec],
) -> aq_optimize::layout::LayoutModel {
    let io = |list: &[TensorSpec]| {
        list.iter()
            .map(|t| aq_optimize::layout::IoSpec {
                name: t.name.clone(),
                dtype: t.dtype.clone(),
                dims: t
                    .shape
                    .iter()
                    .flatten()
                    .map(|d| match d {
                        aq_pack::manifest::Dim::Fixed(v) => Some(*v),
                        aq_pack::manifest::Dim::Symbol(_) => None,
                    })
                    .collect(),
            })
            .collect()
    };
    aq_optimize::layout::LayoutModel {
        name,
        version,
        onnx,
        inputs: io(inputs),
        outputs: io(outputs),
    }
}

/// Every `*.npy` file of `dir`, in name order.
pub(super) fn read_calibration(dir: &Path) -> anyhow::Result<Vec<aq_optimize::npy::Array>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("failed to read the calibration directory {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "npy"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(user_error(
            ExitCode::InvalidInput,
            format!("{} holds no .npy files", dir.display()),
        ));
    }
    files
        .iter()
        .map(|f| {
            let bytes =
                std::fs::read(f).with_context(|| format!("failed to read {}", f.display()))?;
            aq_optimize::npy::read_f32(&bytes).with_context(|| format!("in {}", f.display()))
        })
        .collect()
}

fn human(report: &ExportReport) -> String {
    let mut text = format!(
        "Exported {} to {} ({})\n  self-check  max abs difference {:.1e} (tract on the source and on the export)\n  ops         {}",
        report.source,
        report.target,
        human_bytes(report.bytes as u64),
        report.self_check_max_abs,
        report
            .ops
            .iter()
            .map(|(op, n)| format!("{op}×{n}"))
            .collect::<Vec<_>>()
            .join(" "),
    );
    if let Some(fp32) = report.fp32_bytes {
        text.push_str(&format!(
            "\n  int8        {:.2}x the fp32 export ({}), calibrated on {} inputs",
            report.bytes as f64 / fp32 as f64,
            human_bytes(fp32 as u64),
            report.calibration_inputs.unwrap_or(0)
        ));
    }
    if let (Some(variant), Some(digest)) = (&report.variant, &report.digest) {
        text.push_str(&format!(
            "\n  variant     {variant} recorded in {}\n  digest      {digest}",
            report.source
        ));
    }
    if let Some(output) = &report.output {
        text.push_str(&format!("\n  written     {output}"));
    }
    text
}

fn specs(tensors: &[aq_optimize::tflite::TensorSig]) -> Vec<TensorSpec> {
    tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dtype: t.dtype.clone(),
            shape: Some(
                t.shape
                    .iter()
                    .map(|d| aq_pack::manifest::Dim::Fixed(*d as u64))
                    .collect(),
            ),
        })
        .collect()
}

/// Parses `NAME=D1,D2,...` pairs.
pub(super) fn parse_input_shapes(pairs: &[String]) -> anyhow::Result<InputShapes> {
    let mut shapes = InputShapes::new();
    for pair in pairs {
        let bad = || {
            user_error(
                ExitCode::InvalidInput,
                format!("--input-shape {pair:?} is not NAME=D1,D2,... with positive sizes"),
            )
        };
        let (name, dims) = pair.rsplit_once('=').ok_or_else(bad)?;
        let dims: Vec<usize> = dims
            .split(',')
            .map(|d| d.trim().parse::<usize>().ok().filter(|d| *d > 0))
            .collect::<Option<_>>()
            .ok_or_else(bad)?;
        if name.is_empty() || shapes.insert(name.to_owned(), dims).is_some() {
            return Err(bad());
        }
    }
    Ok(shapes)
}
