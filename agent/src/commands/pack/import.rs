//! `aq pack import`: verify an `.aqpack` as it streams in, then add it in one atomic change.

use std::fs::File;
use std::io::BufReader;

use anyhow::Context;
use aq_pack::archive;
use aq_pack::trust::Verdict;

use crate::cli::ImportArgs;
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

pub fn run(args: ImportArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let policy = super::super::load_policy(&args.trust, settings)?;
    let file = File::open(&args.file)
        .with_context(|| format!("failed to open {}", args.file.display()))?;
    let what = || format!("failed to import {}", args.file.display());
    // Header, manifest and signature are checked before the registry is touched.
    let pending = archive::open(BufReader::with_capacity(1 << 20, file)).with_context(what)?;
    let (verified, verdict) = pending
        .verify(&policy, super::super::now(), args.trust.allow_unsigned)
        .with_context(what)?;
    let registry = super::super::open_registry(settings)?;
    let signer = match verdict {
        Verdict::Trusted { key_id, .. } => Some(key_id),
        Verdict::UnsignedAllowed => None,
    };
    let report = registry.import(verified, signer).with_context(what)?;
    printer.result(&report, || {
        format!(
            "Imported {}\n  digest  {}\n  chunks  {} ({} new, {} stored)\n  signed  {}",
            report.id,
            report.digest,
            report.chunks_total,
            report.chunks_new,
            human_bytes(report.bytes_new),
            report
                .signed_by
                .as_deref()
                .unwrap_or("no (unsigned, allowed by --allow-unsigned)")
        )
    });
    Ok(())
}
