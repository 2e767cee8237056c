//! Settings resolved from flags, environment and defaults before any command runs.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::GlobalArgs;

/// Everything a command needs to know about where and how to run.
#[derive(Debug)]
pub struct Settings {
    pub data_dir: PathBuf,
}

impl Settings {
    pub fn resolve(global: &GlobalArgs) -> anyhow::Result<Settings> {
        let data_dir = match &global.data_dir {
            Some(d) => d.clone(),
            None => default_data_dir()
                .context("cannot choose a data directory; pass --data-dir or set AQ_DATA_DIR")?,
        };
        Ok(Settings { data_dir })
    }

    /// The default trust policy file.
    pub fn trust_file(&self) -> PathBuf {
        self.data_dir.join("trust.toml")
    }
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
