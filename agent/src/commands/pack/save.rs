//! `aq pack save`: inspect a model, chunk it, compress, sign and record it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::Context;
use aq_pack::chunk::{chunk_stream, compress};
use aq_pack::manifest::{self, ChunkRef, FileEntry, Manifest, ModelInfo, Provenance};
use aq_pack::{Digest, SignedManifest};
use aq_store::PackWriter;

use crate::cli::SaveArgs;
use crate::commands::key::load_secret;
use crate::exit::{ExitCode, user_error};
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

pub fn run(args: SaveArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    manifest::validate_name(&args.name)
        .map_err(|r| user_error(ExitCode::InvalidInput, format!("invalid --name: {r}")))?;
    let version = semver::Version::parse(&args.version).map_err(|e| {
        user_error(
            ExitCode::InvalidInput,
            format!(
                "invalid --version {:?}: {e} (expected semantic version like 1.2.0)",
                args.version
            ),
        )
    })?;
    let meta = parse_meta(&args.meta)?;
    let key = args.key.as_deref().map(load_secret).transpose()?;
    let entry = file_name(&args.model)?;
    let mut paths = vec![(entry.clone(), args.model.clone())];
    for extra in &args.files {
        let name = file_name(extra)?;
        if paths.iter().any(|(p, _)| *p == name) {
            return Err(user_error(
                ExitCode::InvalidInput,
                format!("two files are named {name:?}"),
            ));
        }
        paths.push((name, extra.clone()));
    }

    let registry = super::super::open_registry(settings)?;
    let mut writer = registry.begin_save(&args.name, &version)?;
    // tract reads the model while the files are chunked; if it refuses the file, dropping the
    // writer removes every chunk written so far.
    let (signature, files) = std::thread::scope(|scope| {
        let inspection = scope.spawn(|| aq_runtime::inspect(&args.model));
        let files = paths
            .iter()
            .map(|(name, path)| chunk_file(&mut writer, name, path, args.level))
            .collect::<anyhow::Result<Vec<_>>>();
        let signature = inspection
            .join()
            .map_err(|_| anyhow::anyhow!("model inspection thread panicked"))
            .and_then(|r| r.with_context(|| format!("failed to inspect {}", args.model.display())));
        (signature, files)
    });
    let signature = signature?;
    let files = files?;
    for warning in &signature.warnings {
        printer.warn(&format!("{}: {warning}", args.model.display()));
    }
    let manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        name: args.name.clone(),
        version,
        created_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        model: ModelInfo {
            format: signature.format,
            entry,
            inputs: signature.inputs,
            outputs: signature.outputs,
        },
        files,
        meta,
        provenance: Provenance {
            tool: format!("aq {}", env!("CARGO_PKG_VERSION")),
            source: args
                .model
                .file_name()
                .map(|n| n.to_string_lossy().into_owned()),
            created_by: settings.user.clone(),
        },
        variants: Vec::new(),
    };
    let signed =
        SignedManifest::seal(manifest, key.as_ref()).context("failed to build the manifest")?;
    let total = signed.manifest.total_size();
    let report = writer.commit_manifest(signed)?;
    printer.result(&report, || {
        format!(
            "Saved {} ({})\n  digest  {}\n  chunks  {} ({} new, {} stored)\n  signed  {}",
            report.id,
            human_bytes(total),
            report.digest,
            report.chunks_total,
            report.chunks_new,
            human_bytes(report.bytes_new),
            report.signed_by.as_deref().unwrap_or("no (unsigned)"),
        )
    });
    Ok(())
}

fn file_name(path: &Path) -> anyhow::Result<String> {
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        user_error(
            ExitCode::InvalidInput,
            format!("{} has no usable file name", path.display()),
        )
    })?;
    manifest::validate_path(name).map_err(|r| user_error(ExitCode::InvalidInput, r))?;
    Ok(name.to_owned())
}

fn parse_meta(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut meta = BTreeMap::new();
    for pair in pairs {
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            user_error(
                ExitCode::InvalidInput,
                format!("--meta {pair:?} is not KEY=VALUE"),
            )
        })?;
        if meta.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(user_error(
                ExitCode::InvalidInput,
                format!("--meta key {k:?} given twice"),
            ));
        }
    }
    Ok(meta)
}

/// Cuts one file into chunks, storing those the registry lacks, and describes it.
///
/// Two threads: this one reads, cuts and hashes the file and stores compressed chunks; a worker
/// compresses. Memory stays bounded by the channel depth (a few chunks of at most 256 KiB).
fn chunk_file(
    writer: &mut PackWriter<'_>,
    name: &str,
    path: &Path,
    level: i32,
) -> anyhow::Result<FileEntry> {
    let file = File::open(path).with_context(|| format!("failed to open {}", path.display()))?;
    chunk_reader(writer, name, file, &path.display().to_string(), level)
}

/// [`chunk_file`] for any reader; `label` names the source in errors.
pub(crate) fn chunk_reader(
    writer: &mut PackWriter<'_>,
    name: &str,
    reader: impl std::io::Read,
    label: &str,
    level: i32,
) -> anyhow::Result<FileEntry> {
    use std::sync::mpsc;
    let mut hasher = blake3::Hasher::new();
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut sent = std::collections::HashSet::new();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let (to_worker, work) = mpsc::sync_channel::<(Digest, Vec<u8>)>(8);
        // Results are unbounded so the worker never blocks while this thread waits to send it
        // work (that would deadlock); they stay few because this thread drains them after
        // every send.
        let (to_main, done) = mpsc::channel::<anyhow::Result<(Digest, u64, Vec<u8>)>>();
        scope.spawn(move || {
            for (digest, data) in work {
                let result = compress(&data, level).map(|c| (digest, data.len() as u64, c));
                if to_main.send(result.map_err(anyhow::Error::from)).is_err() {
                    break;
                }
            }
        });
        for chunk in chunk_stream(BufReader::with_capacity(1 << 20, reader)) {
            let chunk = chunk.with_context(|| format!("failed to read {label}"))?;
            hasher.update(&chunk.data);
            let len = chunk.data.len() as u64;
            size += len;
            chunks.push(ChunkRef {
                digest: chunk.digest,
                size: len,
            });
            if !sent.contains(&chunk.digest) && writer.needs(&chunk.digest)? {
                sent.insert(chunk.digest);
                // The worker only stops early if this thread hung up, so a send cannot fail
                // while we still hold `done`.
                to_worker
                    .send((chunk.digest, chunk.data))
                    .map_err(|_| anyhow::anyhow!("compression worker stopped"))?;
            }
            while let Ok(item) = done.try_recv() {
                store(writer, item)?;
            }
        }
        drop(to_worker);
        for item in done {
            store(writer, item)?;
        }
        Ok(())
    })?;
    Ok(FileEntry {
        path: name.to_owned(),
        size,
        digest: Digest(*hasher.finalize().as_bytes()),
        chunks,
    })
}

fn store(
    writer: &mut PackWriter<'_>,
    item: anyhow::Result<(Digest, u64, Vec<u8>)>,
) -> anyhow::Result<()> {
    let (digest, len, compressed) = item?;
    writer.add_chunk(&digest, len, &compressed)?;
    Ok(())
}
