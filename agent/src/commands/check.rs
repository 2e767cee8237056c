//! `aq check`: whether this build, under the device profile in use, runs a model (a file, or
//! the model of a pack that profile would serve), with which engine and path; otherwise every
//! operator or feature that stops it, the same list a failed load gives. Exit 5 when it does
//! not run.

use std::collections::HashMap;
use std::path::Path;

use aq_pack::manifest::ModelFormat;
use aq_runtime::{Coverage, LoadOptions};
use serde_json::json;

use crate::cli::CheckArgs;
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::settings::Settings;

/// One model checked: where it came from and what the engine layer says.
struct Checked {
    origin: String,
    format: ModelFormat,
    coverage: Coverage,
    /// Set when the engine that runs it is not one the device profile allows.
    refused_by_profile: Option<String>,
}

impl Checked {
    fn runs(&self) -> bool {
        self.coverage.runs.is_some() && self.refused_by_profile.is_none()
    }

    fn to_json(&self) -> serde_json::Value {
        let blockers: Vec<serde_json::Value> = self
            .coverage
            .blockers
            .iter()
            .map(|b| json!({ "op": b.op, "reason": b.reason, "count": b.count }))
            .collect();
        json!({
            "model": self.origin,
            "format": self.format.to_string(),
            "runs": self.runs(),
            "engine": self.coverage.runs.as_ref().map(|i| json!({
                "name": i.engine, "path": i.path, "kernels": i.kernels, "stateful": i.stateful,
            })),
            "blockers": blockers,
            "reason": self.refused_by_profile.clone().or_else(|| self.coverage.reason.clone()),
        })
    }

    fn human(&self) -> String {
        let mut out = String::new();
        match (&self.coverage.runs, &self.refused_by_profile) {
            (Some(info), None) => {
                out += &format!(
                    "{}: runs\n  engine {}, {} ({})",
                    self.origin, info.engine, info.path, info.kernels
                );
                if info.stateful {
                    out += "\n  stateful: runs one request at a time, state kept between runs";
                }
            }
            (Some(_), Some(why)) => out += &format!("{}: does not run: {why}", self.origin),
            (None, _) => {
                out += &format!("{}: does not run", self.origin);
                if let Some(reason) = &self.coverage.reason {
                    out += &format!(": {reason}");
                }
                for b in &self.coverage.blockers {
                    out += &format!("\n  {b}");
                }
            }
        }
        out
    }
}

fn parse_pairs(flag: &str, pairs: &[String]) -> anyhow::Result<Vec<(String, Vec<f64>)>> {
    pairs
        .iter()
        .map(|pair| {
            let bad = || {
                user_error(
                    ExitCode::InvalidInput,
                    format!("{flag} {pair:?}: expected NAME=V1,V2,..."),
                )
            };
            let (name, values) = pair.split_once('=').ok_or_else(bad)?;
            let values = values
                .split(',')
                .map(|v| v.trim().parse::<f64>().map_err(|_| bad()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((name.to_owned(), values))
        })
        .collect()
}

pub fn run(args: CheckArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let (profile, _) = settings.profile()?;
    let profile = profile.map(|(p, _)| p);
    let input_shapes: HashMap<String, Vec<i64>> = parse_pairs("--input-shape", &args.input_shapes)?
        .into_iter()
        .map(|(n, v)| (n, v.into_iter().map(|d| d as i64).collect()))
        .collect();
    let input_values: HashMap<String, Vec<f64>> = parse_pairs("--input-value", &args.input_values)?
        .into_iter()
        .collect();
    let options = LoadOptions {
        input_shapes,
        input_values,
        threads: profile.as_ref().map_or(1, |p| p.threads.max(1) as usize),
        ..LoadOptions::default()
    };
    // (origin, format, bytes) of each model to check.
    let mut models: Vec<(String, ModelFormat, Vec<u8>)> = Vec::new();
    let path = Path::new(&args.model);
    if path.is_file() || args.model.ends_with(".onnx") || args.model.ends_with(".tflite") {
        let format = aq_runtime::detect_format(path)?;
        let bytes = std::fs::read(path)
            .map_err(|e| user_error(ExitCode::NotFound, format!("{}: {e}", path.display())))?;
        models.push((path.display().to_string(), format, bytes));
    } else {
        let registry = super::open_registry(settings)?;
        let pack = registry.get(&super::parse_ref(&args.model)?)?;
        let manifest = pack.manifest();
        let chosen: Vec<Vec<String>> = if args.all_variants {
            std::iter::once(Vec::new())
                .chain(manifest.variants.iter().map(|v| vec![v.name.clone()]))
                .collect()
        } else if !args.variants.is_empty() {
            vec![args.variants.clone()]
        } else {
            vec![
                profile
                    .as_ref()
                    .map(|p| p.variants.clone())
                    .unwrap_or_default(),
            ]
        };
        for preferred in chosen {
            let source = super::serve::pack_source(
                &registry,
                &pack,
                &manifest.name.to_string(),
                &preferred,
                Default::default(),
            )?;
            models.push((source.origin, source.format, (*source.bytes).clone()));
        }
    }
    let checked: Vec<Checked> = models
        .into_iter()
        .map(|(origin, format, bytes)| {
            let coverage = aq_runtime::check(&bytes, format, &options);
            let refused_by_profile = match (&coverage.runs, &profile) {
                (Some(info), Some(p)) if !p.runtimes.iter().any(|r| r == info.engine) => Some(format!(
                    "it runs on the {} engine, which device profile {} does not allow (runtimes: {})",
                    info.engine,
                    p.name,
                    p.runtimes.join(", ")
                )),
                _ => None,
            };
            Checked {
                origin,
                format,
                coverage,
                refused_by_profile,
            }
        })
        .collect();
    let profile_name = profile.as_ref().map(|p| p.name.clone());
    let all_run = checked.iter().all(Checked::runs);
    printer.result(
        &json!({
            "profile": profile_name,
            "runs": all_run,
            "models": checked.iter().map(Checked::to_json).collect::<Vec<_>>(),
        }),
        || {
            let mut text = format!(
                "device profile: {}\n",
                profile_name.as_deref().unwrap_or("none detected")
            );
            text += &checked
                .iter()
                .map(Checked::human)
                .collect::<Vec<_>>()
                .join("\n");
            text
        },
    );
    if all_run {
        Ok(())
    } else {
        Err(user_error(
            ExitCode::InvalidInput,
            "this build and device profile cannot run the model (see above)",
        ))
    }
}
