//! Device profiles (`targets/*.toml`, embedded in the binary): what kind of device `aq` runs
//! on, chosen by `--profile` or detected from the machine's facts.
//!
//! Parsing and detection are pure functions over text and a [`MachineFacts`] value; only
//! [`MachineFacts::read`] touches `/proc`.

use serde::{Deserialize, Serialize};

/// Every profile in `targets/`, embedded at build time (a test checks none is missing).
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "x86_64-generic",
        include_str!("../../targets/x86_64-generic.toml"),
    ),
    (
        "aarch64-generic",
        include_str!("../../targets/aarch64-generic.toml"),
    ),
    ("rpi4", include_str!("../../targets/rpi4.toml")),
    ("rpi5", include_str!("../../targets/rpi5.toml")),
    (
        "jetson-orin-nano",
        include_str!("../../targets/jetson-orin-nano.toml"),
    ),
    (
        "armv7-generic",
        include_str!("../../targets/armv7-generic.toml"),
    ),
];

/// A device profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub format_version: u32,
    pub name: String,
    pub description: String,
    pub target: String,
    pub cpu_features: Vec<String>,
    pub memory_mb: u64,
    pub threads: u32,
    pub runtimes: Vec<String>,
    pub variants: Vec<String>,
    pub detect: Detect,
}

/// How to recognise a device of this profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    pub arch: String,
    #[serde(default)]
    pub device_tree_model: Vec<String>,
    #[serde(default)]
    pub cpu_parts: Vec<String>,
    #[serde(default)]
    pub fallback: bool,
}

/// A profile file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid device profile {source_name}: {reason}")]
pub struct ProfileError {
    pub source_name: String,
    pub reason: String,
}

const RUNTIMES: &[&str] = &["aq", "tract", "wgpu"];
const VARIANTS: &[&str] = &["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"];

impl Profile {
    /// Parses and checks a profile.
    pub fn parse(source_name: &str, text: &str) -> Result<Profile, ProfileError> {
        let err = |reason: String| ProfileError {
            source_name: source_name.to_owned(),
            reason,
        };
        let p: Profile = toml::from_str(text).map_err(|e| err(e.to_string()))?;
        if p.format_version != 1 {
            return Err(err(format!(
                "format_version {} is not supported",
                p.format_version
            )));
        }
        aq_pack::manifest::validate_name(&p.name).map_err(|r| err(format!("name {r}")))?;
        if p.threads == 0 || p.memory_mb == 0 {
            return Err(err("threads and memory_mb must be positive".into()));
        }
        if let Some(r) = p.runtimes.iter().find(|r| !RUNTIMES.contains(&r.as_str())) {
            return Err(err(format!("unknown runtime {r:?} (known: {RUNTIMES:?})")));
        }
        if let Some(v) = p.variants.iter().find(|v| !VARIANTS.contains(&v.as_str())) {
            return Err(err(format!("unknown variant {v:?} (known: {VARIANTS:?})")));
        }
        if p.runtimes.is_empty() || p.variants.is_empty() {
            return Err(err(
                "runtimes and variants must each name at least one".into()
            ));
        }
        Ok(p)
    }
}

/// All embedded profiles, parsed.
pub fn embedded() -> Result<Vec<Profile>, ProfileError> {
    EMBEDDED
        .iter()
        .map(|(name, text)| Profile::parse(name, text))
        .collect()
}

/// What the detector knows about the machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MachineFacts {
    pub arch: String,
    pub device_tree_model: Option<String>,
    pub cpu_parts: Vec<String>,
    pub cpus: usize,
    pub memory_mb: Option<u64>,
}

impl MachineFacts {
    /// Reads the facts of this machine (Linux `/proc`; absent files are simply unknown).
    pub fn read() -> MachineFacts {
        let device_tree_model = std::fs::read_to_string("/proc/device-tree/model")
            .ok()
            .map(|m| m.trim_end_matches('\0').trim().to_owned())
            .filter(|m| !m.is_empty());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        MachineFacts {
            arch: std::env::consts::ARCH.to_owned(),
            device_tree_model,
            cpu_parts: cpu_parts(&cpuinfo),
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            memory_mb: mem_total_mb(&meminfo),
        }
    }
}

fn cpu_parts(cpuinfo: &str) -> Vec<String> {
    let mut parts: Vec<String> = cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim() == "CPU part")
        .map(|(_, v)| v.trim().to_lowercase())
        .collect();
    parts.sort();
    parts.dedup();
    parts
}

fn mem_total_mb(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

/// Why a profile was chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Named with `--profile` / `AQ_PROFILE`.
    Requested,
    DeviceTreeModel(String),
    CpuPart(String),
    ArchitectureFallback(String),
}

/// Picks the best profile for `facts`, or `None` when no profile has this architecture.
pub fn detect<'p>(profiles: &'p [Profile], facts: &MachineFacts) -> Option<(&'p Profile, Reason)> {
    let candidates = profiles.iter().filter(|p| p.detect.arch == facts.arch);
    let mut best: Option<(u8, &Profile, Reason)> = None;
    for p in candidates {
        let found = if let Some(model) = facts.device_tree_model.as_deref().filter(|m| {
            p.detect
                .device_tree_model
                .iter()
                .any(|want| m.contains(want.as_str()))
        }) {
            Some((3, Reason::DeviceTreeModel(model.to_owned())))
        } else if let Some(part) = facts.cpu_parts.iter().find(|part| {
            p.detect
                .cpu_parts
                .iter()
                .any(|want| want.eq_ignore_ascii_case(part))
        }) {
            Some((2, Reason::CpuPart(part.clone())))
        } else if p.detect.fallback {
            Some((1, Reason::ArchitectureFallback(facts.arch.clone())))
        } else {
            None
        };
        if let Some((score, reason)) = found
            && best.as_ref().is_none_or(|(s, _, _)| score > *s)
        {
            best = Some((score, p, reason));
        }
    }
    best.map(|(_, p, r)| (p, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(arch: &str, model: Option<&str>, parts: &[&str]) -> MachineFacts {
        MachineFacts {
            arch: arch.into(),
            device_tree_model: model.map(Into::into),
            cpu_parts: parts.iter().map(|s| s.to_string()).collect(),
            cpus: 4,
            memory_mb: Some(4096),
        }
    }

    #[test]
    fn every_file_in_targets_is_embedded_and_valid() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../targets");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".toml").map(str::to_owned))
            .collect();
        on_disk.sort();
        let mut names: Vec<String> = EMBEDDED.iter().map(|(n, _)| n.to_string()).collect();
        names.sort();
        assert_eq!(on_disk, names);
        for p in embedded().unwrap() {
            assert!(
                EMBEDDED.iter().any(|(n, _)| *n == p.name),
                "file name must equal profile name: {}",
                p.name
            );
        }
    }

    #[test]
    fn detection_prefers_device_tree_then_cpu_part_then_fallback() {
        let all = embedded().unwrap();
        let (p, r) = detect(
            &all,
            &facts("aarch64", Some("Raspberry Pi 4 Model B Rev 1.4"), &[]),
        )
        .unwrap();
        assert_eq!(
            (p.name.as_str(), r),
            (
                "rpi4",
                Reason::DeviceTreeModel("Raspberry Pi 4 Model B Rev 1.4".into())
            )
        );
        let (p, r) = detect(&all, &facts("aarch64", None, &["0xd0b"])).unwrap();
        assert_eq!(
            (p.name.as_str(), r),
            ("rpi5", Reason::CpuPart("0xd0b".into()))
        );
        let (p, _) = detect(
            &all,
            &facts("aarch64", Some("Some Other Board"), &["0xd03"]),
        )
        .unwrap();
        assert_eq!(p.name, "aarch64-generic");
        let (p, _) = detect(&all, &facts("x86_64", None, &[])).unwrap();
        assert_eq!(p.name, "x86_64-generic");
        let (p, _) = detect(&all, &facts("arm", None, &[])).unwrap();
        assert_eq!(p.name, "armv7-generic");
        assert!(detect(&all, &facts("riscv64", None, &[])).is_none());
    }

    #[test]
    fn proc_parsing() {
        let cpuinfo = "processor\t: 0\nCPU part\t: 0xd08\nprocessor\t: 1\nCPU part\t: 0xD08\n";
        assert_eq!(cpu_parts(cpuinfo), vec!["0xd08".to_string()]);
        assert_eq!(
            mem_total_mb("MemTotal:        3884236 kB\nMemFree: 1 kB\n"),
            Some(3793)
        );
        assert_eq!(mem_total_mb("garbage"), None);
    }

    #[test]
    fn bad_profiles_are_refused() {
        let good = EMBEDDED[0].1;
        assert!(Profile::parse("x", &good.replace("threads = 4", "threads = 0")).is_err());
        assert!(Profile::parse("x", &good.replace("\"tract\"", "\"tensorrt\"")).is_err());
        assert!(Profile::parse("x", &format!("{good}\nsurprise = 1")).is_err());
        assert!(Profile::parse("x", "not toml [").is_err());
    }
}
