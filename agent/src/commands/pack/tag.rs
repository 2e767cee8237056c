//! `aq pack tag` and `aq pack untag`: mutable names for versions.

use serde::Serialize;

use crate::cli::{TagArgs, UntagArgs};
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::settings::Settings;

#[derive(Serialize)]
struct Tagged {
    tag: String,
    target: Option<String>,
}

pub fn run(args: TagArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let reference = super::super::parse_ref(&args.reference)?;
    let registry = super::super::open_registry(settings)?;
    let target = registry.tag(&reference, &args.tag)?;
    let out = Tagged {
        tag: format!("{}:{}", reference.name, args.tag),
        target: Some(target),
    };
    printer.result(&out, || {
        format!("{} -> {}", out.tag, out.target.as_deref().unwrap_or(""))
    });
    Ok(())
}

pub fn untag(args: UntagArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let (name, tag) = args.reference.split_once(':').ok_or_else(|| {
        user_error(
            ExitCode::InvalidInput,
            format!("{:?} is not NAME:TAG", args.reference),
        )
    })?;
    let registry = super::super::open_registry(settings)?;
    registry.untag(name, tag)?;
    let out = Tagged {
        tag: args.reference.clone(),
        target: None,
    };
    printer.result(&out, || format!("Removed tag {}", out.tag));
    Ok(())
}
