//! Settings resolved from flags, environment and defaults before any command runs.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::GlobalArgs;
use crate::exit::{ExitCode, user_error};
use crate::profile::{self, MachineFacts, Profile, Reason};

/// Everything a command needs to know about where and how to run.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
    /// The profile named with `--profile`/`AQ_PROFILE`, already loaded and checked.
    requested_profile: Option<Profile>,
    /// Who runs `aq` (`$USER`), recorded in the provenance of packs it saves. Read here, once,
    /// with the rest of the environment, so commands do not reach into it.
    pub user: Option<String>,
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> anyhow::Result<Settings> {
        let data_dir = match &global.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()
                .context("cannot choose a data directory; pass --data-dir or set AQ_DATA_DIR")?,
        };
        let requested_profile = global.profile.as_deref().map(load_profile).transpose()?;
        Ok(Settings {
            data_dir,
            requested_profile,
            user: std::env::var("USER").ok().filter(|u| !u.is_empty()),
        })
    }

    /// The device profile and why it was chosen (`None` when none matches this machine), with
    /// the machine facts. Detection reads `/proc`, so it runs only for commands that ask.
    pub fn profile(&self) -> anyhow::Result<(Option<(Profile, Reason)>, MachineFacts)> {
        let facts = MachineFacts::read();
        if let Some(p) = &self.requested_profile {
            return Ok((Some((p.clone(), Reason::Requested)), facts));
        }
        let all = profile::embedded()?;
        let detected = profile::detect(&all, &facts).map(|(p, r)| (p.clone(), r));
        Ok((detected, facts))
    }

    /// The default trust policy file.
    pub fn trust_file(&self) -> PathBuf {
        self.data_dir.join("trust.toml")
    }
}

/// A profile by embedded name, or from a file.
fn load_profile(choice: &str) -> anyhow::Result<Profile> {
    if let Some((name, text)) = profile::EMBEDDED.iter().find(|(n, _)| *n == choice) {
        return Ok(Profile::parse(name, text)?);
    }
    let path = Path::new(choice);
    if path.exists() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("failed to read device profile {}", path.display()))?;
        return Ok(Profile::parse(&path.display().to_string(), &text)?);
    }
    let known: Vec<&str> = profile::EMBEDDED.iter().map(|(n, _)| *n).collect();
    Err(user_error(
        ExitCode::InvalidInput,
        format!(
            "unknown device profile {choice:?}: not a file, and not one of {}",
            known.join(", ")
        ),
    ))
}

fn default_data_dir() -> Option<PathBuf> {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return Some(Path::new(&xdg).join("aquilia"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return Some(Path::new(&home).join(".local/share/aquilia"));
    }
    Some(PathBuf::from("/var/lib/aquilia"))
}
