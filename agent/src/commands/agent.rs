//! `aq agent enroll` and `aq agent run`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use aq_sync_proto::fleet::{EnrollChallenge, EnrollRequest, EnrollResponse};
use hyper::Method;

use crate::cli::{AgentRunArgs, EnrollArgs};
use crate::daemon::config::{self, AgentConfig};
use crate::daemon::sync::Agent;
use crate::exit::{ExitCode, user_error};
use crate::printer::Printer;
use crate::remote::{Client, Remote, RemoteOptions};
use crate::settings::Settings;

/// Parses `KEY=VALUE` labels.
pub fn parse_labels(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in items.iter().flat_map(|i| i.split(',')) {
        let (k, v) = item.split_once('=').ok_or_else(|| {
            user_error(
                ExitCode::InvalidInput,
                format!("label {item:?} is not KEY=VALUE"),
            )
        })?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

pub fn enroll(args: EnrollArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let data_dir = &settings.data_dir;
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let labels = parse_labels(&args.labels)?;
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_owned(),
        (None, Some(p)) => std::fs::read_to_string(p)
            .with_context(|| format!("failed to read {}", p.display()))?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(user_error(
                ExitCode::InvalidInput,
                "an enrollment token is needed: --token, AQ_TOKEN or --token-file",
            ));
        }
    };
    // The CA is copied in, so the agent keeps working if the original file moves.
    let ca = match &args.ca {
        Some(path) => {
            let bytes = std::fs::read(path)
                .with_context(|| format!("failed to read the CA file {}", path.display()))?;
            let copy = data_dir.join(config::CA_FILE);
            config::write_atomic(&copy, &bytes, false)?;
            Some(copy)
        }
        None => None,
    };
    let key = config::device_key(data_dir)?;
    let remote = Remote::new(&RemoteOptions {
        url: args.server.clone(),
        token: Some(token),
        ca: ca.clone(),
    })?;
    // Two steps: a one-time nonce from the server, then the request signed over it by the
    // device key (proof that this machine holds the key it enrolls).
    let response: EnrollResponse = super::runtime()?
        .block_on(async {
            let mut client = Client::new(remote);
            let challenge: EnrollChallenge = client
                .json(
                    Method::POST,
                    "/v1/devices/enroll/challenge",
                    None::<&serde_json::Value>,
                )
                .await?;
            let request =
                EnrollRequest::sign(&key, labels.clone(), args.name.clone(), challenge.nonce);
            client
                .json(Method::POST, "/v1/devices/enroll", Some(&request))
                .await
        })
        .with_context(|| format!("failed to enroll with {}", args.server))?;
    aq_pack::TrustPolicy::parse(&response.trust_policy)
        .context("the server's trust policy does not parse")?;
    config::write_atomic(
        &settings.trust_file(),
        response.trust_policy.as_bytes(),
        false,
    )?;
    let agent_config = AgentConfig {
        format_version: 1,
        server: args.server.trim_end_matches('/').to_owned(),
        ca,
        device: response.device.clone(),
        token: response.token,
        mqtt_url: response.mqtt_url.clone(),
        topic_prefix: response.topic_prefix,
        server_key: response.server_key,
        labels,
    };
    agent_config.save(data_dir)?;
    let out = serde_json::json!({
        "device": response.device,
        "server": agent_config.server,
        "mqtt": response.mqtt_url,
        "labels": agent_config.labels,
        "server_key": agent_config.server_key.key_id(),
    });
    printer.result(&out, || {
        format!(
            "Enrolled as {} with {}\n  mqtt        {}\n  server key  {}\nStart it with `aq agent run`.",
            agent_config.device,
            agent_config.server,
            agent_config.mqtt_url,
            agent_config.server_key.key_id()
        )
    });
    Ok(())
}

pub fn run(args: AgentRunArgs, settings: &Settings, printer: &Printer) -> anyhow::Result<()> {
    let agent_config = AgentConfig::load(&settings.data_dir)?;
    let key = config::device_key(&settings.data_dir)?;
    let heartbeat = super::serve::parse_duration("--heartbeat", &args.heartbeat)?;
    if heartbeat < Duration::from_millis(100) {
        return Err(user_error(
            ExitCode::InvalidInput,
            "--heartbeat must be at least 100ms",
        ));
    }
    let config = super::serve::load_config(&args.serving)?;
    let server_settings = super::serve::server_settings(&config, &args.serving)?;
    let model_settings = super::serve::model_settings(&config, &args.serving, settings)?;
    super::serve::init_logs(&args.serving)?;
    let remote = Remote::new(&RemoteOptions {
        url: agent_config.server.clone(),
        token: Some(agent_config.token.clone()),
        ca: agent_config.ca.clone(),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("aq-agent")
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    runtime.block_on(async {
        let server = aq_serve::Server::start(server_settings, &[]).await?;
        let addr = server.local_addr().context("failed to read the bound address")?;
        let preferred_variants = super::serve::preferred_variants(&args.serving, settings)?;
        let capabilities = capabilities(settings, &preferred_variants, &model_settings)?;
        let agent = Arc::new(Agent {
            data_dir: settings.data_dir.clone(),
            config: agent_config,
            key,
            remote,
            server: server.handle(),
            model_settings,
            preferred_variants,
            capabilities,
            heartbeat,
            started: Instant::now(),
        });
        let restored = match agent.restore().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "the active pack could not be served again");
                None
            }
        };
        printer.result(
            &serde_json::json!({ "listening": format!("http://{addr}"), "device": agent.config.device, "active": restored }),
            || {
                format!(
                    "listening on http://{addr} (device {}, active {})",
                    agent.config.device,
                    restored.as_deref().unwrap_or("none")
                )
            },
        );
        let sync = tokio::spawn(agent.clone().run());
        server.run(aq_serve::shutdown_signal()).await;
        sync.abort();
        anyhow::Ok(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// What this device reports it can run: its engines (those this build has that the device
/// profile allows), the variants it picks, its aq version.
fn capabilities(
    settings: &Settings,
    variants: &[String],
    model_settings: &aq_serve::ModelSettings,
) -> anyhow::Result<aq_sync_proto::fleet::Capabilities> {
    let (profile, _) = settings.profile()?;
    let profile = profile.map(|(p, _)| p);
    let engines = aq_runtime::ENGINES
        .iter()
        .filter(|e| {
            profile
                .as_ref()
                .is_none_or(|p| p.runtimes.iter().any(|r| r == *e))
        })
        .map(|e| (*e).to_owned())
        .collect();
    Ok(aq_sync_proto::fleet::Capabilities {
        aq_version: env!("CARGO_PKG_VERSION").to_owned(),
        profile: profile.map(|p| p.name),
        variants: variants.to_vec(),
        engines,
        threads: u32::try_from(model_settings.threads_per_run()).unwrap_or(u32::MAX),
    })
}
