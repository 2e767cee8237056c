//! The agent's own record of what it runs (`agent-state.json`), replaced atomically after each
//! change: the last desired seq it acted on, the active pack and the previous one.

use std::path::Path;

use anyhow::Context;
use aq_sync_proto::fleet::PackTarget;
use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "agent-state.json";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentState {
    /// The highest desired-state seq acted on; anything not above it is ignored.
    pub desired_seq: u64,
    pub active: Option<PackTarget>,
    pub previous: Option<PackTarget>,
    /// Why the last desired state could not be applied.
    pub last_error: Option<String>,
}

impl AgentState {
    pub fn load(data_dir: &Path) -> anyhow::Result<AgentState> {
        let path = data_dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("the agent state {} is not valid", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AgentState::default()),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    pub fn save(&self, data_dir: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).context("failed to encode the agent state")?;
        super::config::write_atomic(&data_dir.join(STATE_FILE), &bytes, false)
    }
}
