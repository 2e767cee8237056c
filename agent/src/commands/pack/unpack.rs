//! `aq pack unpack`: the original files, byte for byte, in a new directory.

use crate::cli::UnpackArgs;
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

pub fn run(args: UnpackArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let reference = super::super::parse_ref(&args.reference)?;
    let registry = super::super::open_registry(settings)?;
    let report = registry.unpack(&reference, &args.output)?;
    printer.result(&report, || {
        format!(
            "Unpacked {} into {}: {} ({})",
            report.id,
            report.dir,
            report.files.join(", "),
            human_bytes(report.bytes)
        )
    });
    Ok(())
}
