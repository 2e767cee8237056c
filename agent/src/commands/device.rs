//! `aq device profile`: the device profile in use, and why it was chosen.

use serde::Serialize;

use crate::cli::DeviceProfileArgs;
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::profile::{self, MachineFacts, Profile, Reason};
use crate::settings::Settings;

#[derive(Serialize)]
struct Chosen<'a> {
    profile: &'a Profile,
    reason: &'a Reason,
    machine: &'a MachineFacts,
}

pub fn profile(
    args: DeviceProfileArgs,
    settings: &Settings,
    printer: &Printer,
) -> anyhow::Result<()> {
    if args.list {
        let all = profile::embedded()?;
        printer.result(&all, || {
            all.iter()
                .map(|p| format!("{:<18} {:<32} {}\n", p.name, p.target, p.description))
                .collect()
        });
        return Ok(());
    }
    let (chosen, facts) = settings.profile()?;
    let (profile, reason) = chosen.as_ref().ok_or_else(|| {
        user_error(
            ExitCode::NotFound,
            format!(
                "no device profile matches this machine (arch {}); pass --profile NAME|FILE",
                facts.arch
            ),
        )
    })?;
    let out = Chosen {
        profile,
        reason,
        machine: &facts,
    };
    printer.result(&out, || {
        let why = match reason {
            Reason::Requested => "requested with --profile".to_owned(),
            Reason::DeviceTreeModel(m) => format!("detected: device-tree model {m:?}"),
            Reason::CpuPart(p) => format!("detected: CPU part {p}"),
            Reason::ArchitectureFallback(a) => format!("detected: generic profile for {a}"),
        };
        format!(
            "{} ({why})\n  {}\n  target    {}\n  threads   {} (this machine has {} CPUs)\n  memory    {} MB class (this machine: {})\n  runtimes  {}\n  variants  {}\n  features  {}",
            profile.name,
            profile.description,
            profile.target,
            profile.threads,
            facts.cpus,
            profile.memory_mb,
            facts.memory_mb.map_or("unknown".into(), |m| format!("{m} MB")),
            profile.runtimes.join(", "),
            profile.variants.join(", "),
            profile.cpu_features.join(", "),
        )
    });
    Ok(())
}
