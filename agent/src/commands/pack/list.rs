//! `aq pack list`: every pack in the registry.

use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

pub fn run(settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let registry = super::super::open_registry(settings)?;
    let packs = registry.list()?;
    printer.result(&packs, || {
        if packs.is_empty() {
            return "No packs. Add one with `aq pack save MODEL --name NAME --version 1.0.0`."
                .into();
        }
        let mut out = format!(
            "{:<32} {:<12} {:<8} {:>10}  {:<18} {:<16} TAGS\n",
            "NAME", "VERSION", "FORMAT", "SIZE", "DIGEST", "SIGNED BY"
        );
        for p in &packs {
            out.push_str(&format!(
                "{:<32} {:<12} {:<8} {:>10}  {:<18} {:<16} {}\n",
                p.name,
                p.version,
                p.format,
                human_bytes(p.size),
                &p.digest[..p.digest.len().min(19)],
                p.signed_by.as_deref().unwrap_or("-"),
                p.tags.join(",")
            ));
        }
        out
    });
    Ok(())
}
