//! Writing a pack's files back to a directory, byte for byte, atomically.
//!
//! Files are written into a fresh temporary directory beside the target and renamed into place
//! at the end, so the target either appears complete or not at all. The target must not exist
//! or must be an empty directory: unpacking never writes through existing files or symlinks.

use std::fs;
use std::path::Path;

use aq_pack::PackRef;
use serde::Serialize;

use crate::error::{StoreError, io_err};
use crate::registry::Registry;

/// What `unpack` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct UnpackReport {
    pub id: String,
    pub dir: String,
    pub files: Vec<String>,
    pub bytes: u64,
}

impl Registry {
    /// Writes every file of the pack under `dir`.
    pub fn unpack(&self, reference: &PackRef, dir: &Path) -> Result<UnpackReport, StoreError> {
        let pack = self.get(reference)?;
        let manifest = pack.manifest();
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => {
                let mut entries = fs::read_dir(dir).map_err(io_err("read", dir))?;
                if entries.next().is_some() {
                    return Err(StoreError::InvalidInput(format!(
                        "{} is not empty; unpack writes only into a new or empty directory",
                        dir.display()
                    )));
                }
            }
            Ok(_) => {
                return Err(StoreError::InvalidInput(format!(
                    "{} exists and is not a directory",
                    dir.display()
                )));
            }
            Err(_) => {}
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => std::path::PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(io_err("create", &parent))?;
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce)
            .map_err(|e| io_err("make a temporary name in", &parent)(std::io::Error::other(e)))?;
        let staging = parent.join(format!(".aq-unpack-{:016x}", u64::from_le_bytes(nonce)));
        let result = self.unpack_into(manifest, &staging).and_then(|report| {
            if dir.exists() {
                // Checked empty above; remove_dir refuses anything else.
                fs::remove_dir(dir).map_err(io_err("replace", dir))?;
            }
            fs::rename(&staging, dir).map_err(io_err("move unpacked files to", dir))?;
            Ok(report)
        });
        if result.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        let (files, bytes) = result?;
        Ok(UnpackReport {
            id: manifest.id(),
            dir: dir.display().to_string(),
            files,
            bytes,
        })
    }

    fn unpack_into(
        &self,
        manifest: &aq_pack::Manifest,
        staging: &Path,
    ) -> Result<(Vec<String>, u64), StoreError> {
        fs::create_dir(staging).map_err(io_err("create", staging))?;
        let mut files = Vec::new();
        let mut bytes = 0;
        for file in &manifest.files {
            // Paths were validated when the manifest was parsed: relative, no `..`, no `.`.
            aq_pack::manifest::validate_path(&file.path).map_err(StoreError::InvalidInput)?;
            let target = staging.join(&file.path);
            if let Some(p) = target.parent() {
                fs::create_dir_all(p).map_err(io_err("create", p))?;
            }
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&target)
                .map_err(io_err("create", &target))?;
            bytes += self.write_file(manifest, &file.path, &mut out)?;
            out.sync_all().map_err(io_err("sync", &target))?;
            files.push(file.path.clone());
        }
        Ok((files, bytes))
    }
}
