//! `aq rollout ...` and `aq deploy`: thin clients of the server's `/v1/rollouts` routes.

use anyhow::Context;
use aq_sync_proto::fleet::{RolloutList, RolloutRequest, RolloutStatus};
use hyper::Method;

use crate::cli::{DeployArgs, RemoteArgs, RolloutCommand, RolloutSpec};
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::remote::Client;
use crate::settings::Settings;

fn request(pack: &str, spec: &RolloutSpec) -> anyhow::Result<RolloutRequest> {
    let bad = |m: String| user_error(ExitCode::InvalidInput, m);
    let steps = spec
        .steps
        .split(',')
        .map(|s| s.trim().trim_end_matches('%').parse::<u32>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            bad(format!(
                "--steps {:?}: expected percentages like 10,50,100",
                spec.steps
            ))
        })?;
    let text = spec.max_failure.trim();
    let max_failure = match text.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|v| v / 100.0),
        None => text.parse::<f64>(),
    }
    .map_err(|_| {
        bad(format!(
            "--max-failure {text:?}: expected a percentage like 5%"
        ))
    })?;
    let soak_s = spec
        .soak
        .as_deref()
        .map(|s| super::serve::parse_duration("--soak", s).map(|d| d.as_secs()))
        .transpose()?;
    Ok(RolloutRequest {
        pack: pack.to_owned(),
        selector: super::agent::parse_labels(&spec.selector)?,
        steps,
        max_failure,
        soak_s,
        force: spec.force,
    })
}

fn call<T: serde::de::DeserializeOwned>(
    remote: &RemoteArgs,
    method: Method,
    path: &str,
    body: Option<&RolloutRequest>,
) -> anyhow::Result<T> {
    let remote_conn = super::remote(remote)?;
    super::runtime()?
        .block_on(async { Client::new(remote_conn).json(method, path, body).await })
        .with_context(|| format!("failed to reach {}", remote.server))
}

fn show(status: &RolloutStatus) -> String {
    let counts: Vec<String> = status
        .counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    let mut text = format!(
        "Rollout {} of {}: {:?}, step {} of {} ({}%)\n  devices  {}",
        status.id,
        status.pack.id,
        status.phase,
        status.step + 1,
        status.steps.len(),
        status.steps[status.step.min(status.steps.len().saturating_sub(1))],
        counts.join(", ")
    );
    if let Some(reason) = &status.reason {
        text.push_str(&format!("\n  reason   {reason}"));
    }
    for (device, outcome) in &status.devices {
        text.push_str(&format!("\n  {device}  {outcome:?}"));
    }
    text
}

pub fn run(command: RolloutCommand, printer: &Printer) -> anyhow::Result<()> {
    let (remote, method, path, body) = match &command {
        RolloutCommand::Create { pack, spec, remote } => (
            remote,
            Method::POST,
            "/v1/rollouts".to_owned(),
            Some(request(pack, spec)?),
        ),
        RolloutCommand::Status { id: None, remote } => {
            let list: RolloutList = call(remote, Method::GET, "/v1/rollouts", None)?;
            printer.result(&list, || {
                list.rollouts
                    .iter()
                    .map(|r| {
                        format!(
                            "{}  {:<12} {:?}  step {}/{}",
                            r.id,
                            r.pack.id,
                            r.phase,
                            r.step + 1,
                            r.steps.len()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            return Ok(());
        }
        RolloutCommand::Status {
            id: Some(id),
            remote,
        } => (remote, Method::GET, format!("/v1/rollouts/{id}"), None),
        RolloutCommand::Advance { id, remote } => (
            remote,
            Method::POST,
            format!("/v1/rollouts/{id}/advance"),
            None,
        ),
        RolloutCommand::Pause { id, remote } => (
            remote,
            Method::POST,
            format!("/v1/rollouts/{id}/pause"),
            None,
        ),
        RolloutCommand::Resume { id, remote } => (
            remote,
            Method::POST,
            format!("/v1/rollouts/{id}/resume"),
            None,
        ),
        RolloutCommand::Rollback { id, remote } => (
            remote,
            Method::POST,
            format!("/v1/rollouts/{id}/rollback"),
            None,
        ),
    };
    let status: RolloutStatus = call(remote, method, &path, body.as_ref())?;
    printer.result(&status, || show(&status));
    Ok(())
}

pub fn deploy(args: DeployArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let rollout = request("", &args.spec)?;
    let pushed = super::pack::push::push(&args.reference, &[], &args.remote, settings, printer)?;
    let rollout = RolloutRequest {
        pack: pushed.id.clone(),
        ..rollout
    };
    let status: RolloutStatus = call(&args.remote, Method::POST, "/v1/rollouts", Some(&rollout))?;
    let out = serde_json::json!({ "push": pushed, "rollout": status });
    printer.result(&out, || {
        format!(
            "Pushed {} ({} of {} chunks uploaded)\n{}",
            pushed.id,
            pushed.chunks_uploaded,
            pushed.chunks_total,
            show(&status)
        )
    });
    Ok(())
}
