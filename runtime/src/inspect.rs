//! Reading a model's signature (inputs and outputs) without running it.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use aq_pack::manifest::{Dim, ModelFormat, TensorSpec};

/// A model's inputs and outputs as tract sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSignature {
    pub format: ModelFormat,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Things a user should know that do not stop the model from being packed, e.g. that
    /// tract cannot load it yet.
    pub warnings: Vec<String>,
}

/// Errors from inspecting a model file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    #[error("failed to read {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid {format} model: {reason}")]
    NotAModel {
        path: String,
        format: &'static str,
        reason: String,
    },
    #[error("{path} is neither an ONNX nor a TFLite model ({reason})")]
    UnknownFormat { path: String, reason: String },
    #[error(
        "tract panicked while reading {path} as {format} (the file is malformed or uses a feature tract does not handle): {message}"
    )]
    Panicked {
        path: String,
        format: &'static str,
        message: String,
    },
}

/// TFLite flatbuffers carry the file identifier "TFL3" at bytes 4..8.
fn is_tflite(head: &[u8]) -> bool {
    head.len() >= 8 && &head[4..8] == b"TFL3"
}

/// Decides the format from the file's content (and its extension when the content is
/// ambiguous: ONNX protobuf has no magic number).
pub fn detect_format(path: &Path) -> Result<ModelFormat, InspectError> {
    use std::io::Read;
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).map_err(|source| InspectError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let n = f.read(&mut head).map_err(|source| InspectError::Io {
        path: path.display().to_string(),
        source,
    })?;
    if is_tflite(&head[..n]) {
        return Ok(ModelFormat::Tflite);
    }
    if path.extension().and_then(|e| e.to_str()) == Some("tflite") {
        return Err(InspectError::NotAModel {
            path: path.display().to_string(),
            format: "TFLite",
            reason: "the file lacks the TFL3 identifier".into(),
        });
    }
    Ok(ModelFormat::Onnx)
}

/// Reads the signature of the model at `path`.
pub fn inspect(path: &Path) -> Result<ModelSignature, InspectError> {
    let format = detect_format(path)?;
    let (name, result) = match format {
        ModelFormat::Onnx => ("ONNX", guarded(|| onnx_signature(path))),
        ModelFormat::Tflite => ("TFLite", guarded(|| tflite_signature(path))),
    };
    match result {
        Ok(Ok((inputs, outputs, warnings))) => Ok(ModelSignature {
            format,
            inputs,
            outputs,
            warnings,
        }),
        Ok(Err(reason)) => Err(match format {
            ModelFormat::Onnx
                if reason.contains("decode Protobuf")
                    || reason.contains("does not contain a graph") =>
            {
                InspectError::UnknownFormat {
                    path: path.display().to_string(),
                    reason,
                }
            }
            _ => InspectError::NotAModel {
                path: path.display().to_string(),
                format: name,
                reason,
            },
        }),
        Err(message) => Err(InspectError::Panicked {
            path: path.display().to_string(),
            format: name,
            message,
        }),
    }
}

type Signature = (Vec<TensorSpec>, Vec<TensorSpec>, Vec<String>);

/// The first line of a (possibly long, multi-line) tract error, capped in length.
fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '{', ':']);
    line.chars().take(300).collect()
}

thread_local! {
    /// True while this thread runs tract inside [`guarded`].
    static IN_GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs a panic hook that stays silent for panics this crate contains (they become
/// errors or warnings) and defers to the previous hook for every other panic. For binaries:
/// without it, a contained tract panic still prints "thread panicked at ..." on stderr.
pub fn install_quiet_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_GUARDED.with(std::cell::Cell::get) {
            previous(info);
        }
    }));
}

/// Runs `f`, turning a panic into its message.
pub(crate) fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let was = IN_GUARDED.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_GUARDED.with(|g| g.set(was));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

fn datum_name(dt: tract_onnx::prelude::DatumType) -> String {
    use tract_onnx::prelude::DatumType as D;
    match dt {
        D::Bool => "bool",
        D::U8 => "u8",
        D::U16 => "u16",
        D::U32 => "u32",
        D::U64 => "u64",
        D::I8 => "i8",
        D::I16 => "i16",
        D::I32 => "i32",
        D::I64 => "i64",
        D::F16 => "f16",
        D::F32 => "f32",
        D::F64 => "f64",
        D::String => "string",
        D::QI8(_) => "qi8",
        D::QU8(_) => "qu8",
        D::QI32(_) => "qi32",
        _ => "?",
    }
    .to_owned()
}

fn tdim(d: &tract_onnx::prelude::TDim) -> Dim {
    match d.to_i64() {
        Ok(v) if v >= 0 => Dim::Fixed(v as u64),
        Ok(_) => Dim::Symbol("?".into()),
        Err(_) => Dim::Symbol(d.to_string()),
    }
}

fn onnx_signature(path: &Path) -> Result<Signature, String> {
    use tract_onnx::prelude::*;
    use tract_onnx::tract_hir::infer::GenericFactoid;
    let model = tract_onnx::onnx()
        .with_ignore_output_shapes(false)
        .model_for_path(path)
        .map_err(|e| format!("{e:#}"))?;
    let spec = |outlet: OutletId, name: String| -> Result<TensorSpec, String> {
        let fact: &InferenceFact = model.outlet_fact(outlet).map_err(|e| format!("{e:#}"))?;
        let shape = if fact.shape.is_open() {
            None
        } else {
            Some(
                fact.shape
                    .dims()
                    .map(|d| match d {
                        GenericFactoid::Only(t) => tdim(t),
                        GenericFactoid::Any => Dim::Symbol("?".into()),
                    })
                    .collect(),
            )
        };
        Ok(TensorSpec {
            name,
            dtype: fact
                .datum_type()
                .map(datum_name)
                .unwrap_or_else(|| "?".into()),
            shape,
        })
    };
    // Symbol names are rendered while `model` (which owns the symbol scope) is alive.
    let inputs = model
        .input_outlets()
        .map_err(|e| format!("{e:#}"))?
        .iter()
        .map(|o| spec(*o, model.node(o.node).name.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = model
        .output_outlets()
        .map_err(|e| format!("{e:#}"))?
        .iter()
        .map(|o| {
            let name = model
                .outlet_label(*o)
                .map(String::from)
                .unwrap_or_else(|| model.node(o.node).name.clone());
            spec(*o, name)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Tell the user now if this build cannot run the model (either engine).
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let coverage = crate::load::check(
        &bytes,
        ModelFormat::Onnx,
        &crate::load::LoadOptions::default(),
    );
    let warning = coverage_warning(&coverage);
    Ok((inputs, outputs, warning.into_iter().collect()))
}

fn tflite_signature(path: &Path) -> Result<Signature, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let (inputs, outputs) = aq_engine::tflite::io(&bytes).map_err(|e| e.to_string())?;
    let spec = |d: aq_engine::tflite::IoDecl| -> TensorSpec {
        let dtype = match (d.dtype, d.quantized) {
            ("float32", _) => "f32",
            ("float16", _) => "f16",
            ("float64", _) => "f64",
            ("int32", true) => "qi32",
            ("int32", false) => "i32",
            ("uint8", true) => "qu8",
            ("uint8", false) => "u8",
            ("int8", true) => "qi8",
            ("int8", false) => "i8",
            ("int16", _) => "i16",
            ("int64", _) => "i64",
            ("uint16", _) => "u16",
            ("uint32", _) => "u32",
            ("uint64", _) => "u64",
            ("bool", _) => "bool",
            ("string", _) => "string",
            _ => "?",
        };
        TensorSpec {
            name: d.name,
            dtype: dtype.into(),
            shape: Some(
                d.shape
                    .iter()
                    .map(|dim| match dim {
                        Some(n) => Dim::Fixed(*n as u64),
                        None => Dim::Symbol("?".into()),
                    })
                    .collect(),
            ),
        }
    };
    // Tell the user now if this build cannot run the model: the pack is still valid for
    // runtimes that can, such as LiteRT.
    let coverage = crate::load::check(
        &bytes,
        ModelFormat::Tflite,
        &crate::load::LoadOptions::default(),
    );
    Ok((
        inputs.into_iter().map(spec).collect(),
        outputs.into_iter().map(spec).collect(),
        coverage_warning(&coverage).into_iter().collect(),
    ))
}

/// One line saying why this build cannot run a model, when it cannot.
pub fn coverage_warning(coverage: &crate::load::Coverage) -> Option<String> {
    if coverage.runs.is_some() {
        return None;
    }
    let why = if coverage.blockers.is_empty() {
        coverage.reason.clone().unwrap_or_default()
    } else {
        coverage
            .blockers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    Some(format!(
        "this build of aq cannot run the model: {}",
        first_line(&why)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/models")
            .join(name)
    }

    #[test]
    fn onnx_with_symbolic_batch() {
        let sig = inspect(&fixture("ppocr_cls.onnx")).unwrap();
        assert_eq!(sig.format, ModelFormat::Onnx);
        assert_eq!(sig.inputs.len(), 1);
        assert_eq!(sig.inputs[0].name, "x");
        assert_eq!(sig.inputs[0].dtype, "f32");
        let shape = sig.inputs[0].shape.clone().unwrap();
        assert_eq!(shape.len(), 4);
        assert_eq!(shape[1], Dim::Fixed(3));
        assert!(matches!(shape[0], Dim::Symbol(_)), "{shape:?}");
    }

    #[test]
    fn tflite_float_model() {
        let sig = inspect(&fixture("sine_float.tflite")).unwrap();
        assert_eq!(sig.format, ModelFormat::Tflite);
        assert_eq!(sig.inputs[0].dtype, "f32");
        assert_eq!(sig.outputs.len(), 1);
    }

    #[test]
    fn a_model_this_build_cannot_run_gets_a_warning_naming_every_blocker() {
        let sig = inspect(&fixture("mediapipe/face_landmark_with_attention.tflite")).unwrap();
        assert!(!sig.inputs.is_empty());
        assert_eq!(sig.warnings.len(), 1, "{:?}", sig.warnings);
        for op in [
            "Landmarks2TransformMatrix",
            "TransformTensorBilinear",
            "TransformLandmarks",
        ] {
            assert!(sig.warnings[0].contains(op), "{:?}", sig.warnings);
        }
        assert!(!sig.warnings[0].contains('\n'));
        assert!(
            inspect(&fixture("okay_nabu.tflite"))
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn not_a_model() {
        let dir = std::env::temp_dir().join(format!("aq-inspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("notes.onnx");
        std::fs::write(&text, b"this is not a model, just some text\n").unwrap();
        let err = inspect(&text).unwrap_err();
        assert!(
            matches!(
                err,
                InspectError::UnknownFormat { .. } | InspectError::NotAModel { .. }
            ),
            "{err}"
        );
        let fake = dir.join("fake.tflite");
        std::fs::write(&fake, b"garbage!garbage!").unwrap();
        assert!(matches!(
            inspect(&fake).unwrap_err(),
            InspectError::NotAModel { .. }
        ));
        let truncated = dir.join("trunc.tflite");
        let bytes = std::fs::read(fixture("sine_float.tflite")).unwrap();
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        assert!(inspect(&truncated).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
