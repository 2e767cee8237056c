//! `aq pack gc`: remove chunks that no pack references.

use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

pub fn run(settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let registry = super::super::open_registry(settings)?;
    let report = registry.gc()?;
    printer.result(&report, || {
        format!(
            "Removed {} unreferenced chunk(s), {} freed; {} leftover file(s) removed",
            report.chunks_removed,
            human_bytes(report.bytes_freed),
            report.orphan_files_removed
        )
    });
    Ok(())
}
