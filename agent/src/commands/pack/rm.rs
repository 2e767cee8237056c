//! `aq pack rm`: remove a pack and its tags; chunks stay until `aq pack gc`.

use serde::Serialize;

use crate::cli::RefArgs;
use crate::printer::Printer;
use crate::settings::Settings;

pub fn run(args: RefArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let reference = super::super::parse_ref(&args.reference)?;
    let registry = super::super::open_registry(settings)?;
    let removed = registry.remove(&reference)?;
    #[derive(Serialize)]
    struct Out {
        removed: String,
    }
    let out = Out { removed };
    printer.result(&out, || {
        format!(
            "Removed {} (run `aq pack gc` to free its chunks)",
            out.removed
        )
    });
    Ok(())
}
