//! What enrollment leaves in the data directory: `agent.toml` (server, device id, token, MQTT
//! endpoint, the server's public key) and `device.key` (the device's ed25519 key).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use aq_pack::keys::{PublicKey, SecretKey};
use aq_store::atomic_write;
use serde::{Deserialize, Serialize};

use crate::exit::{ExitCode, user_error};

pub const CONFIG_FILE: &str = "agent.toml";
pub const KEY_FILE: &str = "device.key";
pub const CA_FILE: &str = "server-ca.pem";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub format_version: u32,
    pub server: String,
    /// CA file for the server (a copy in the data directory), when not the system's.
    pub ca: Option<PathBuf>,
    pub device: String,
    pub token: String,
    pub mqtt_url: String,
    pub topic_prefix: String,
    /// The key desired states must be signed with.
    pub server_key: PublicKey,
    pub labels: BTreeMap<String, String>,
}

impl AgentConfig {
    pub fn load(data_dir: &Path) -> anyhow::Result<AgentConfig> {
        let path = data_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(user_error(
                    ExitCode::NotFound,
                    format!(
                        "{} does not exist: enroll this device first with `aq agent enroll --server URL --token T`",
                        path.display()
                    ),
                ));
            }
            Err(e) => return Err(e).with_context(|| format!("failed to read {}", path.display())),
        };
        let config: AgentConfig = toml::from_str(&text)
            .map_err(|e| user_error(ExitCode::InvalidInput, format!("{}: {e}", path.display())))?;
        if config.format_version != 1 {
            return Err(user_error(
                ExitCode::InvalidInput,
                format!(
                    "{}: format_version {} is not supported",
                    path.display(),
                    config.format_version
                ),
            ));
        }
        Ok(config)
    }

    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let text = toml::to_string(self).context("failed to encode the agent config")?;
        write_atomic(&data_dir.join(CONFIG_FILE), text.as_bytes(), true)
    }
}

/// Loads the device key, making it on first use.
pub fn device_key(data_dir: &Path) -> anyhow::Result<SecretKey> {
    let path = data_dir.join(KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => SecretKey::from_file_text(&text)
            .with_context(|| format!("the device key {} is not valid", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
            let key = SecretKey::from_seed(seed);
            write_atomic(&path, key.to_file_text().as_bytes(), true)?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Writes a file so a crash leaves the old or the new content (`aq_store::atomic_write`);
/// `private` makes it 0600 before any byte is written.
pub fn write_atomic(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    let mode = if private {
        atomic_write::Mode::Private
    } else {
        atomic_write::Mode::Public
    };
    atomic_write::write(path, bytes, mode, atomic_write::Existing::Replace)
        .with_context(|| format!("failed to write {}", path.display()))
}
