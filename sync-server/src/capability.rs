//! Whether devices can run a pack, from the capabilities they report: for each device, the
//! model it would load (its first preferred variant the pack has, else the main model) is
//! checked with the engine layer this server is built with (`aq_runtime::check`, the same
//! check `aq check` and a failed load give), and the engine that would run it must be one
//! the device has. A rollout to a cohort with a device that cannot run the pack is refused,
//! naming the devices and why, unless forced.
//!
//! Devices that never reported capabilities (older agents, not yet connected) are not
//! refused: nothing is known about them.

use std::collections::HashMap;

use aq_store::{Registry, StoredPack};
use aq_sync_proto::fleet::DeviceInfo;
use hyper::StatusCode;

use crate::error::ApiError;

/// A device that cannot run the pack, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incapable {
    pub device: String,
    pub reason: String,
}

/// What one model (a variant, or the main model) needs: the engine that runs it, or why none
/// does.
type Verdict = Result<&'static str, String>;

fn verdict(
    registry: &Registry,
    pack: &StoredPack,
    variants: &[String],
) -> Result<(String, Verdict), ApiError> {
    let manifest = pack.manifest();
    let (variant, model) = manifest.select_model(variants);
    let label = variant.map_or_else(|| "the main model".to_owned(), |v| format!("variant {v}"));
    let mut bytes = Vec::new();
    registry.write_file(manifest, &model.entry, &mut bytes)?;
    let coverage = aq_runtime::check(&bytes, model.format, &aq_runtime::LoadOptions::default());
    let verdict = match coverage.runs {
        Some(info) => Ok(info.engine),
        None => Err(aq_runtime::coverage_warning(&coverage)
            .unwrap_or_else(|| "it does not load".to_owned())
            .replace("this build of aq cannot run the model: ", "")),
    };
    Ok((label, verdict))
}

/// The devices among `devices` that cannot run `pack`.
pub fn incapable(
    registry: &Registry,
    pack: &StoredPack,
    devices: &[DeviceInfo],
) -> Result<Vec<Incapable>, ApiError> {
    let mut checked: HashMap<Vec<String>, (String, Verdict)> = HashMap::new();
    let mut out = Vec::new();
    for device in devices {
        let Some(caps) = device
            .reported
            .as_ref()
            .and_then(|r| r.capabilities.as_ref())
        else {
            continue;
        };
        if !checked.contains_key(&caps.variants) {
            checked.insert(
                caps.variants.clone(),
                verdict(registry, pack, &caps.variants)?,
            );
        }
        let (label, verdict) = &checked[&caps.variants];
        let reason = match verdict {
            Ok(engine) if caps.engines.iter().any(|e| e == engine) => continue,
            Ok(engine) => format!(
                "{label} runs on the {engine} engine, which the device does not have (it has: {})",
                caps.engines.join(", ")
            ),
            Err(why) => format!("{label}: {why}"),
        };
        out.push(Incapable {
            device: device.device.clone(),
            reason,
        });
    }
    Ok(out)
}

/// The answer refusing a rollout of `pack` to these devices.
pub fn refusal(pack: &str, incapable: &[Incapable]) -> ApiError {
    let list: Vec<String> = incapable
        .iter()
        .map(|i| format!("{} ({})", i.device, i.reason))
        .collect();
    ApiError::new(
        StatusCode::CONFLICT,
        "incapable_devices",
        format!(
            "{} selected device(s) cannot run {pack}: {}; start it with force (aq rollout create --force) to roll out anyway",
            incapable.len(),
            list.join("; ")
        ),
    )
}
