//! Serving-stack layouts: the files another server expects for a model, as (path, bytes)
//! pairs. No I/O: the caller writes them.
//!
//! - [`triton`]: a Triton Inference Server model repository entry,
//!   `NAME/config.pbtxt` plus `NAME/VERSION/model.onnx`.
//! - [`torchserve`]: a TorchServe model archive (`.mar`).
//! - [`bentoml`]: a BentoML model store entry (`models/NAME/VERSION/`).

mod zip;

use std::fmt::Write as _;

use crate::error::ExportError;

/// Element types of model inputs and outputs, as the manifest names them (`f32`, `i64`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSpec {
    pub name: String,
    pub dtype: String,
    /// `None` for a free dimension.
    pub dims: Vec<Option<u64>>,
}

/// A model to lay out.
#[derive(Debug, Clone)]
pub struct LayoutModel {
    pub name: String,
    pub version: semver::Version,
    pub onnx: Vec<u8>,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
}

/// One file of a layout: a relative path with `/` separators, and its bytes.
pub type LayoutFile = (String, Vec<u8>);

/// Triton's version directory for a semantic version: `major·10⁶ + minor·10³ + patch`, so
/// Triton's "latest" policy picks the highest semantic version of those in the repository.
pub fn triton_version(v: &semver::Version) -> Result<u64, ExportError> {
    if v.minor >= 1000 || v.patch >= 1000 || v.major >= 1_000_000 {
        return Err(ExportError::Layout(format!(
            "version {v}: Triton version numbers hold minor and patch below 1000"
        )));
    }
    let n = v.major * 1_000_000 + v.minor * 1000 + v.patch;
    if n == 0 {
        return Err(ExportError::Layout(
            "version 0.0.0: Triton versions start at 1".into(),
        ));
    }
    Ok(n)
}

fn triton_type(dtype: &str) -> Result<&'static str, ExportError> {
    Ok(match dtype {
        "f32" => "TYPE_FP32",
        "f16" => "TYPE_FP16",
        "f64" => "TYPE_FP64",
        "i8" => "TYPE_INT8",
        "i16" => "TYPE_INT16",
        "i32" => "TYPE_INT32",
        "i64" => "TYPE_INT64",
        "u8" => "TYPE_UINT8",
        "u16" => "TYPE_UINT16",
        "u32" => "TYPE_UINT32",
        "u64" => "TYPE_UINT64",
        "bool" => "TYPE_BOOL",
        "string" => "TYPE_STRING",
        other => {
            return Err(ExportError::Layout(format!(
                "Triton has no tensor type for {other:?}"
            )));
        }
    })
}

/// A Triton model repository entry for an ONNX model, served by Triton's ONNX Runtime
/// backend. When every input and output has a free leading axis, it is the batch axis:
/// `max_batch_size` is `max_batch` and dynamic batching waits at most `max_delay_us`.
pub fn triton(
    model: &LayoutModel,
    max_batch: u32,
    max_delay_us: u64,
) -> Result<Vec<LayoutFile>, ExportError> {
    check_name(&model.name)?;
    let version = triton_version(&model.version)?;
    let batched = max_batch > 0
        && model
            .inputs
            .iter()
            .chain(&model.outputs)
            .all(|t| t.dims.first() == Some(&None));
    let mut config = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(config, "name: \"{}\"", model.name);
    let _ = writeln!(config, "platform: \"onnxruntime_onnx\"");
    let _ = writeln!(
        config,
        "max_batch_size: {}",
        if batched { max_batch } else { 0 }
    );
    for (kind, list) in [("input", &model.inputs), ("output", &model.outputs)] {
        let _ = writeln!(config, "{kind} [");
        for (i, t) in list.iter().enumerate() {
            let dims: Vec<String> = t
                .dims
                .iter()
                .skip(usize::from(batched))
                .map(|d| d.map_or("-1".to_owned(), |v| v.to_string()))
                .collect();
            let _ = writeln!(
                config,
                "  {{\n    name: \"{}\"\n    data_type: {}\n    dims: [ {} ]\n  }}{}",
                escape(&t.name),
                triton_type(&t.dtype)?,
                dims.join(", "),
                if i + 1 < list.len() { "," } else { "" }
            );
        }
        let _ = writeln!(config, "]");
    }
    if batched {
        let _ = writeln!(
            config,
            "dynamic_batching {{\n  max_queue_delay_microseconds: {max_delay_us}\n}}"
        );
    }
    let _ = writeln!(config, "version_policy: {{ latest {{ num_versions: 1 }} }}");
    Ok(vec![
        (format!("{}/config.pbtxt", model.name), config.into_bytes()),
        (
            format!("{}/{version}/model.onnx", model.name),
            model.onnx.clone(),
        ),
    ])
}

/// The handler a `.mar` carries: onnxruntime behind `aq serve`'s v1 JSON.
pub const TORCHSERVE_HANDLER: &str = include_str!("torchserve_handler.py");

/// The version of torch-model-archiver whose layout [`torchserve`] writes.
pub const TORCH_MODEL_ARCHIVER_VERSION: &str = "0.12.0";

/// A TorchServe model archive: `model.onnx`, `handler.py` ([`TORCHSERVE_HANDLER`]) and
/// `MAR-INF/MANIFEST.json` as torch-model-archiver writes it, in a zip. `created_on` is the
/// archive's creation time as torch-model-archiver prints it (`%d/%m/%Y %H:%M:%S`).
pub fn torchserve(model: &LayoutModel, created_on: &str) -> Result<Vec<u8>, ExportError> {
    check_name(&model.name)?;
    let manifest = format!(
        "{{\n  \"createdOn\": \"{created_on}\",\n  \"runtime\": \"python\",\n  \"model\": {{\n    \"modelName\": \"{}\",\n    \"serializedFile\": \"model.onnx\",\n    \"handler\": \"handler.py\",\n    \"modelVersion\": \"{}\"\n  }},\n  \"archiverVersion\": \"{TORCH_MODEL_ARCHIVER_VERSION}\"\n}}",
        model.name, model.version
    );
    zip::stored(&[
        ("model.onnx".to_owned(), model.onnx.clone()),
        (
            "handler.py".to_owned(),
            TORCHSERVE_HANDLER.as_bytes().to_vec(),
        ),
        ("MAR-INF/MANIFEST.json".to_owned(), manifest.into_bytes()),
    ])
}

/// The BentoML release whose model store layout [`bentoml`] writes.
pub const BENTOML_VERSION: &str = "1.4.40";

/// ONNX `TensorProto.DataType` numbers, by manifest dtype.
fn onnx_elem_type(dtype: &str) -> Result<u32, ExportError> {
    Ok(match dtype {
        "f32" => 1,
        "u8" => 2,
        "i8" => 3,
        "u16" => 4,
        "i16" => 5,
        "i32" => 6,
        "i64" => 7,
        "string" => 8,
        "bool" => 9,
        "f16" => 10,
        "f64" => 11,
        "u32" => 12,
        "u64" => 13,
        other => {
            return Err(ExportError::Layout(format!(
                "ONNX has no element type for {other:?}"
            )));
        }
    })
}

/// A YAML single-quoted scalar.
fn yaml(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A BentoML model store entry for an ONNX model, as `bentoml.onnx.save_model` writes it:
/// `models/NAME/VERSION/model.yaml` and `saved_model.onnx`, and `models/NAME/latest`. Point
/// `BENTOML_HOME` at the directory the files go to and `bentoml.onnx.load_model("NAME:VERSION")`
/// loads it. `created` is an RFC 3339 time.
pub fn bentoml(model: &LayoutModel, created: &str) -> Result<Vec<LayoutFile>, ExportError> {
    check_name(&model.name)?;
    let version = model.version.to_string().to_lowercase().replace('+', "-");
    let mut y = String::new();
    let _ = writeln!(y, "name: {}", yaml(&model.name));
    let _ = writeln!(y, "version: {}", yaml(&version));
    let _ = writeln!(y, "module: bentoml.onnx\nlabels: {{}}\noptions:");
    for (key, list) in [
        ("input_specs", &model.inputs),
        ("output_specs", &model.outputs),
    ] {
        let _ = writeln!(y, "  {key}:\n    run:");
        for t in list {
            let _ = writeln!(
                y,
                "    - name: {}\n      type:\n        tensorType:\n          elemType: {}\n          shape:\n            dim:",
                yaml(&t.name),
                onnx_elem_type(&t.dtype)?
            );
            for d in &t.dims {
                match d {
                    Some(v) => {
                        let _ = writeln!(y, "            - dimValue: '{v}'");
                    }
                    None => {
                        let _ = writeln!(y, "            - dimParam: '?'");
                    }
                }
            }
        }
    }
    let _ = writeln!(
        y,
        "  providers: null\n  session_options: null\nmetadata: {{}}"
    );
    let _ = writeln!(
        y,
        "context:\n  framework_name: onnx\n  framework_versions: {{}}\n  bentoml_version: {BENTOML_VERSION}\n  python_version: '3'"
    );
    let _ = writeln!(
        y,
        "signatures:\n  run:\n    batchable: false\napi_version: v2"
    );
    let _ = writeln!(y, "creation_time: {}", yaml(created));
    let dir = format!("models/{}/{version}", model.name);
    Ok(vec![
        (format!("{dir}/model.yaml"), y.into_bytes()),
        (format!("{dir}/saved_model.onnx"), model.onnx.clone()),
        (
            format!("models/{}/latest", model.name),
            version.into_bytes(),
        ),
    ])
}

/// A model name usable as a directory and in a config: ASCII letters, digits, `.`, `_`, `-`.
fn check_name(name: &str) -> Result<(), ExportError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ExportError::Layout(format!(
            "{name:?} cannot name a model directory (letters, digits, '.', '_', '-')"
        )))
    }
}

/// A protobuf text-format string body.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triton_versions_keep_semantic_order() {
        let v = |s: &str| triton_version(&semver::Version::parse(s).unwrap()).unwrap();
        assert_eq!(v("1.2.3"), 1_002_003);
        assert!(v("1.10.0") > v("1.9.999"));
        assert!(v("2.0.0") > v("1.999.999"));
        assert!(
            triton_version(&semver::Version::new(0, 0, 0)).is_err(),
            "versions start at 1"
        );
        assert!(triton_version(&semver::Version::new(1, 1000, 0)).is_err());
    }
}
