//! `aq pack pull`: download a pack from a sync-server (see [`crate::transfer`]): signature
//! against the local trust policy first, then only the chunks the registry lacks, each checked
//! against its digest; an interrupted pull resumes where it stopped.

use std::sync::Arc;

use anyhow::Context;

use crate::cli::PullArgs;
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;
use crate::transfer;

pub fn run(args: PullArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let policy = super::super::load_policy(&args.trust, settings)?;
    let remote = super::super::remote(&args.remote)?;
    let jobs = usize::from(args.remote.jobs);
    let what = || {
        format!(
            "failed to pull {} from {}",
            args.reference, args.remote.server
        )
    };
    let runtime = super::super::runtime()?;
    let registry = Arc::new(super::super::open_registry(settings)?);
    let out = runtime
        .block_on(transfer::fetch_pack(
            remote,
            registry,
            &args.reference,
            &policy,
            args.trust.allow_unsigned,
            super::super::now(),
            jobs,
            Some(printer),
        ))
        .with_context(what)?;
    printer.result(&out, || {
        format!(
            "{} {} from {}\n  digest      {}\n  signed      {}\n  downloaded  {} of {} chunks ({}; the pack is {})",
            if out.created { "Pulled" } else { "Already here:" },
            out.id,
            out.server,
            out.digest,
            out.signed_by.as_deref().unwrap_or("no (unsigned, allowed by --allow-unsigned)"),
            out.chunks_downloaded,
            out.chunks_total,
            human_bytes(out.bytes_downloaded),
            human_bytes(out.pack_bytes),
        )
    });
    Ok(())
}
