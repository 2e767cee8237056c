//! `aq pack inspect`: a readable summary of one pack, or its full manifest with `--json`.

use aq_pack::manifest::TensorSpec;
use serde::Serialize;

use crate::cli::RefArgs;
use crate::printer::{Printer, human_bytes};
use crate::settings::Settings;

#[derive(Serialize)]
struct Inspected<'a> {
    id: String,
    digest: String,
    saved_at: &'a str,
    tags: &'a [String],
    signature: Option<&'a aq_pack::SignatureEnvelope>,
    manifest: &'a aq_pack::Manifest,
}

fn tensors(list: &[TensorSpec]) -> String {
    list.iter()
        .map(|t| {
            let shape = match &t.shape {
                Some(dims) => format!(
                    "[{}]",
                    dims.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => "(unknown shape)".into(),
            };
            format!("    {:<24} {:<6} {shape}\n", t.name, t.dtype)
        })
        .collect()
}

pub fn run(args: RefArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let reference = super::super::parse_ref(&args.reference)?;
    let registry = super::super::open_registry(settings)?;
    let pack = registry.get(&reference)?;
    let m = pack.manifest();
    let out = Inspected {
        id: m.id(),
        digest: pack.signed.digest().to_string(),
        saved_at: &pack.saved_at,
        tags: &pack.tags,
        signature: pack.signed.signature.as_ref(),
        manifest: m,
    };
    printer.result(&out, || {
        let mut s = format!("{}\n", out.id);
        s.push_str(&format!("  digest    {}\n", out.digest));
        s.push_str(&format!(
            "  format    {} (entry {})\n",
            m.model.format, m.model.entry
        ));
        s.push_str(&format!(
            "  size      {} in {} file(s), {} chunks\n",
            human_bytes(m.total_size()),
            m.files.len(),
            m.unique_chunks().len()
        ));
        s.push_str(&format!(
            "  signed    {}\n",
            out.signature
                .map(|sig| format!("key {} ({})", sig.key_id, sig.public_key))
                .unwrap_or_else(|| "no (unsigned)".into())
        ));
        s.push_str(&format!(
            "  tags      {}\n",
            if out.tags.is_empty() {
                "-".into()
            } else {
                out.tags.join(", ")
            }
        ));
        s.push_str(&format!(
            "  created   {} by {}\n",
            m.created_at, m.provenance.tool
        ));
        s.push_str(&format!("  inputs\n{}", tensors(&m.model.inputs)));
        s.push_str(&format!("  outputs\n{}", tensors(&m.model.outputs)));
        s.push_str("  files\n");
        for f in &m.files {
            s.push_str(&format!(
                "    {:<24} {:>10}  {}\n",
                f.path,
                human_bytes(f.size),
                f.digest
            ));
        }
        if !m.variants.is_empty() {
            s.push_str("  variants\n");
            for v in &m.variants {
                s.push_str(&format!(
                    "    {:<24} {} (entry {})\n",
                    v.name, v.model.format, v.model.entry
                ));
                for (k, value) in &v.notes {
                    s.push_str(&format!("      {k} = {value}\n"));
                }
            }
        }
        if !m.meta.is_empty() {
            s.push_str("  meta\n");
            for (k, v) in &m.meta {
                s.push_str(&format!("    {k} = {v}\n"));
            }
        }
        s
    });
    Ok(())
}
