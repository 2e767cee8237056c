//! Adding a variant to a stored pack (`aq export`, `aq optimize quantize`): the checks before
//! any work, and the extended, re-signed manifest committed in one store transaction.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use aq_pack::SignedManifest;
use aq_pack::keys::SecretKey;
use aq_pack::manifest::{ModelFormat, ModelInfo, Variant};
use aq_store::{ImportReport, Registry, StoredPack};

use crate::commands::key::load_secret;
use crate::commands::pack::save::chunk_reader;
use crate::exit::{ExitCode, user_error};
use crate::settings::Settings;

/// A stored pack with an ONNX main model, about to gain a variant.
pub struct VariantSource {
    pub registry: Registry,
    pub stored: StoredPack,
    /// The main model's bytes, every chunk verified.
    pub onnx: Vec<u8>,
    key: Option<SecretKey>,
}

/// Opens `reference` for the variant `variant`: refuses a pack that has it already, a main
/// model that is not ONNX, and a signed pack without `--key` (the manifest is signed anew).
pub fn open(
    reference: &str,
    variant: &str,
    key: Option<&Path>,
    settings: &Settings,
) -> anyhow::Result<VariantSource> {
    let reference = super::parse_ref(reference)?;
    let registry = super::open_registry(settings)?;
    let stored = registry.get(&reference)?;
    let manifest = stored.manifest();
    if manifest.variant(variant).is_some() {
        return Err(user_error(
            ExitCode::Conflict,
            format!("{} already has the variant {variant}", manifest.id()),
        ));
    }
    if manifest.model.format != ModelFormat::Onnx {
        return Err(user_error(
            ExitCode::InvalidInput,
            format!(
                "{} holds a {} model; variants are made from ONNX models",
                manifest.id(),
                manifest.model.format
            ),
        ));
    }
    if stored.signed.signature.is_some() && key.is_none() {
        return Err(user_error(
            ExitCode::InvalidInput,
            format!(
                "{} is signed; the variant changes its manifest, so sign it again with --key FILE",
                manifest.id()
            ),
        ));
    }
    let key = key.map(load_secret).transpose()?;
    let mut onnx = Vec::new();
    registry.write_file(manifest, &manifest.model.entry, &mut onnx)?;
    Ok(VariantSource {
        registry,
        stored,
        onnx,
        key,
    })
}

impl VariantSource {
    /// Stores `bytes` as `variants/NAME/FILE`, and commits the manifest extended with the
    /// variant (`model.entry` is set here) and signed with the key given to [`open`].
    pub fn record(
        &self,
        name: &str,
        file_name: &str,
        mut model: ModelInfo,
        bytes: &[u8],
        mut notes: BTreeMap<String, String>,
    ) -> anyhow::Result<ImportReport> {
        let path = format!("variants/{name}/{file_name}");
        let mut writer = self.registry.begin_variant(&self.stored)?;
        let file = chunk_reader(
            &mut writer,
            &path,
            bytes,
            "the variant's model",
            aq_pack::chunk::DEFAULT_LEVEL,
        )?;
        let mut extended = self.stored.manifest().clone();
        extended.files.push(file);
        model.entry = path;
        notes.insert(
            "tool".to_owned(),
            format!("aq {}", env!("CARGO_PKG_VERSION")),
        );
        extended.variants.push(Variant {
            name: name.to_owned(),
            model,
            notes,
        });
        let signed = SignedManifest::seal(extended, self.key.as_ref())
            .context("failed to build the extended manifest")?;
        Ok(writer.commit_manifest(signed)?)
    }
}
