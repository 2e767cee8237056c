//! `aq pack export`: the single-file `.aqpack` form, written atomically.

use std::fs::File;
use std::io::BufWriter;

use anyhow::Context;
use serde::Serialize;

use crate::cli::ExportArgs;
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

pub fn run(args: ExportArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let reference = super::super::parse_ref(&args.reference)?;
    let registry = super::super::open_registry(settings)?;
    let pack = registry.get(&reference)?;
    let id = pack.manifest().id();
    let mut tmp_name = args.output.as_os_str().to_owned();
    tmp_name.push(".partial");
    let tmp = std::path::PathBuf::from(tmp_name);
    let result = (|| -> anyhow::Result<u64> {
        let file =
            File::create(&tmp).with_context(|| format!("failed to create {}", tmp.display()))?;
        let writer = registry.export(&reference, BufWriter::with_capacity(1 << 20, file))?;
        let file = writer.into_inner().context("failed to flush the archive")?;
        file.sync_all().context("failed to sync the archive")?;
        std::fs::rename(&tmp, &args.output)
            .with_context(|| format!("failed to move the archive to {}", args.output.display()))?;
        Ok(std::fs::metadata(&args.output)?.len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let size = result?;
    #[derive(Serialize)]
    struct Out {
        id: String,
        file: String,
        bytes: u64,
    }
    let out = Out {
        id,
        file: args.output.display().to_string(),
        bytes: size,
    };
    printer.result(&out, || {
        format!(
            "Exported {} to {} ({})",
            out.id,
            out.file,
            human_bytes(out.bytes)
        )
    });
    Ok(())
}
