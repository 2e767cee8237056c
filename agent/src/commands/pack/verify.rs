//! `aq pack verify`: the signature against a trust policy, then every chunk and file digest.

use crate::cli::VerifyArgs;
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

pub fn run(args: VerifyArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let reference = super::super::parse_ref(&args.reference)?;
    let policy = super::super::load_policy(&args.trust, settings)?;
    let registry = super::super::open_registry(settings)?;
    let report = registry.verify(
        &reference,
        &policy,
        super::super::now(),
        args.trust.allow_unsigned,
    )?;
    printer.result(&report, || {
        format!(
            "OK {}: signature {}; {} chunks and {} file(s) ({}) match their digests",
            report.id,
            match (&report.signed_by, &report.signer_label) {
                (Some(k), Some(l)) => format!("by trusted key {k} ({l})"),
                _ => "absent (allowed by --allow-unsigned)".into(),
            },
            report.chunks_checked,
            report.files_checked,
            human_bytes(report.bytes_checked)
        )
    });
    Ok(())
}
