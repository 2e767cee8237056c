//! The sync loop: MQTT in (desired state), the applier (fetch, verify, activate), and MQTT out
//! (reports on every change and every heartbeat).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use aq_pack::TrustPolicy;
use aq_pack::keys::SecretKey;
use aq_serve::{ModelSettings, ModelSource, ServerHandle};
use aq_store::Registry;
use aq_sync_proto::backoff::Backoff;
use aq_sync_proto::fleet::{
    self, Decision, DesiredState, Health, Kind, PackTarget, Phase, ReportedState,
};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::{Mutex, watch};

use super::config::AgentConfig;
use super::state::AgentState;
use crate::remote::Remote;

/// The first wait before a desired state is tried again after a passing failure; it doubles
/// up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Loose chunks younger than this survive a prune: a pull or fetch under way keeps them.
const PRUNE_GRACE: Duration = Duration::from_secs(3600);

/// A device's own spread of its waits, so that a fleet cut off together comes back spread.
fn spread_seed(device: &str) -> u64 {
    let hash = blake3::hash(device.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Whether an error of applying a desired state will likely pass by itself: the server
/// unreachable, overloaded (429) or failing (5xx). A pack that does not verify or load, or a
/// refusal (4xx), is a failure the server must hear about.
fn transient(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<crate::remote::RemoteError>()
            .is_some_and(crate::remote::RemoteError::is_transient)
    })
}

/// Everything the loop needs.
pub struct Agent {
    pub data_dir: PathBuf,
    pub config: AgentConfig,
    pub key: SecretKey,
    pub remote: Arc<Remote>,
    pub server: ServerHandle,
    pub model_settings: ModelSettings,
    /// Pack variants to load, best first (the device profile's, or `--variant`).
    pub preferred_variants: Vec<String>,
    /// What this device runs, sent with every report.
    pub capabilities: fleet::Capabilities,
    pub heartbeat: Duration,
    pub started: Instant,
}

/// What the agent last said about itself.
struct Status {
    state: AgentState,
    phase: Phase,
    last_report_seq: u64,
}

/// The source of a pack's model (its preferred variant, if it has one), read from the
/// registry with every chunk checked.
pub fn model_source(
    registry: &Registry,
    target: &PackTarget,
    preferred: &[String],
    settings: ModelSettings,
) -> anyhow::Result<ModelSource> {
    let reference: aq_pack::PackRef = target
        .id
        .parse()
        .with_context(|| format!("bad pack id {}", target.id))?;
    let pack = registry.get(&reference)?;
    if pack.signed.digest().to_string() != target.digest {
        anyhow::bail!(
            "the local {} has digest {}, not {}",
            target.id,
            pack.signed.digest(),
            target.digest
        );
    }
    let name = pack.manifest().name.clone();
    crate::commands::serve::pack_source(registry, &pack, &name, preferred, settings)
}

fn served_name(target: &PackTarget) -> &str {
    target.id.split(':').next().unwrap_or(&target.id)
}

impl Agent {
    fn mqtt_options(&self) -> anyhow::Result<MqttOptions> {
        let (host, port) =
            fleet::parse_mqtt_url(&self.config.mqtt_url).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut options = MqttOptions::new(self.config.device.clone(), host, port);
        options.set_keep_alive(Duration::from_secs(15));
        // A clean session on every connection, so each subscription is new and the broker
        // sends the retained desired state at once. With a kept session, a broker may skip
        // retained messages for a subscription it already holds (rumqttd does): an agent
        // killed after receiving a desired state, before applying it, then waited for the
        // server's resend scan (15 to 30 s) after its restart. Desired states are retained,
        // so nothing queued in a kept session is needed.
        options.set_clean_session(true);
        // Oversized messages are read and refused one by one; a smaller limit would drop the
        // connection, and the broker would send the same message again on reconnect.
        options.set_max_packet_size(fleet::MAX_INCOMING_PACKET, fleet::MAX_MESSAGE_BYTES * 2);
        Ok(options)
    }

    /// Puts the active pack (from the state file) back in service after a restart; when it
    /// cannot be served, the previous one, so that a device never comes back serving nothing
    /// while it has a pack that works.
    pub async fn restore(&self) -> anyhow::Result<Option<String>> {
        let state = AgentState::load(&self.data_dir)?;
        let Some(active) = state.active else {
            return Ok(None);
        };
        let active_error = match self.serve_from_registry(&active).await {
            Ok(()) => return Ok(Some(active.id)),
            Err(e) => e,
        };
        let Some(previous) = state.previous else {
            return Err(active_error);
        };
        tracing::warn!(active = %active.id, error = %format!("{active_error:#}"), previous = %previous.id, "the active pack cannot be served; serving the previous one");
        self.serve_from_registry(&previous)
            .await
            .with_context(|| format!("{active_error:#}; and the previous pack"))?;
        // The state says what runs now, and why: reports stay true and the server sees a
        // failed device.
        let fallen_back = AgentState {
            desired_seq: state.desired_seq,
            active: Some(previous.clone()),
            previous: None,
            last_error: Some(format!(
                "{} could not be served after a restart ({}); {} serves instead",
                active.id,
                crate::exit::error_text(&active_error),
                previous.id
            )),
        };
        fallen_back.save(&self.data_dir)?;
        Ok(Some(previous.id))
    }

    /// Loads `target` from the local registry into the model server.
    async fn serve_from_registry(&self, target: &PackTarget) -> anyhow::Result<()> {
        let data_dir = self.data_dir.clone();
        let settings = self.model_settings.clone();
        let target = target.clone();
        let preferred = self.preferred_variants.clone();
        let source = tokio::task::spawn_blocking(move || {
            let registry = Registry::open(&data_dir)?;
            model_source(&registry, &target, &preferred, settings)
        })
        .await??;
        self.server.put(&source).await?;
        Ok(())
    }

    /// Runs until the process ends.
    pub async fn run(self: Arc<Self>) -> anyhow::Result<()> {
        let state = AgentState::load(&self.data_dir)?;
        let status = Arc::new(Mutex::new(Status {
            phase: if state.last_error.is_some() {
                Phase::Failed
            } else {
                Phase::Applied
            },
            state,
            last_report_seq: 0,
        }));
        let (client, eventloop) = AsyncClient::new(self.mqtt_options()?, 64);
        let (desired_tx, mut desired_rx) = watch::channel::<Option<DesiredState>>(None);
        let (connected_tx, mut connected_rx) = watch::channel(0u64);
        tokio::spawn(drive(
            self.clone(),
            eventloop,
            client.clone(),
            desired_tx,
            connected_tx,
        ));

        let mut heartbeat = tokio::time::interval(self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // A desired state whose pack could not be fetched for a passing reason (the server
        // down or overloaded): tried again after a back-off, unless a newer one arrives.
        let mut retry: Option<(DesiredState, tokio::time::Instant)> = None;
        let mut backoff = Backoff::new(RETRY_FIRST, RETRY_MAX, spread_seed(&self.config.device));
        loop {
            let retry_at = retry.as_ref().map(|(_, at)| *at);
            tokio::select! {
                changed = desired_rx.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let desired = desired_rx.borrow_and_update().clone();
                    if let Some(desired) = desired {
                        backoff.reset();
                        retry = self.apply(&client, &status, desired).await.map(|d| {
                            (d, tokio::time::Instant::now() + backoff.next_wait())
                        });
                    }
                }
                _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                    if let Some((desired, _)) = retry.take() {
                        retry = self.apply(&client, &status, desired).await.map(|d| {
                            (d, tokio::time::Instant::now() + backoff.next_wait())
                        });
                    }
                }
                _ = connected_rx.changed() => self.report(&client, &status).await,
                _ = heartbeat.tick() => self.report(&client, &status).await,
            }
        }
    }

    /// Acts on a verified desired state if it is newer than what was applied. Returns it when
    /// it could not be applied for a passing reason ([`transient`]): the phase stays
    /// `applying`, nothing is recorded, and the caller tries again later.
    async fn apply(
        &self,
        client: &AsyncClient,
        status: &Mutex<Status>,
        desired: DesiredState,
    ) -> Option<DesiredState> {
        let current = status.lock().await.state.clone();
        if fleet::accept(current.desired_seq, &desired) == Decision::Stale {
            tracing::debug!(
                seq = desired.seq,
                applied = current.desired_seq,
                "stale desired state ignored"
            );
            return None;
        }
        tracing::info!(seq = desired.seq, pack = ?desired.pack.as_ref().map(|p| &p.id), "desired state");
        status.lock().await.phase = Phase::Applying;
        self.report(client, status).await;
        let result = self.activate(&current, desired.pack.clone()).await;
        if let Err(e) = &result
            && transient(e)
        {
            tracing::warn!(seq = desired.seq, error = %crate::exit::error_text(e), "cannot reach the server; trying again later, the previous pack keeps serving");
            return Some(desired);
        }
        let mut next = current.clone();
        next.desired_seq = desired.seq;
        let phase = match result {
            Ok(()) => {
                if next.active != desired.pack {
                    next.previous = next.active.take();
                    next.active = desired.pack.clone();
                }
                next.last_error = None;
                Phase::Applied
            }
            Err(e) => {
                let message = crate::exit::error_text(&e);
                tracing::warn!(seq = desired.seq, error = %message, "desired state not applied; the previous pack keeps serving");
                next.last_error = Some(message);
                Phase::Failed
            }
        };
        if let Err(e) = next.save(&self.data_dir) {
            tracing::error!(error = %format!("{e:#}"), "cannot save the agent state");
        } else if phase == Phase::Applied {
            self.prune(&next).await;
        }
        {
            let mut s = status.lock().await;
            s.state = next;
            s.phase = phase;
        }
        self.report(client, status).await;
        None
    }

    /// Makes `target` the served pack: from the registry when it is there (a rollback), else
    /// fetched and verified first. The old model serves until the new one is loaded.
    async fn activate(
        &self,
        current: &AgentState,
        target: Option<PackTarget>,
    ) -> anyhow::Result<()> {
        let Some(target) = target else {
            if let Some(active) = &current.active {
                self.server.remove(served_name(active));
            }
            return Ok(());
        };
        if current.active.as_ref() == Some(&target) && self.server_has(served_name(&target)) {
            // Already active and served (a repeat, or a rollback to what runs).
            return Ok(());
        }
        let registry = {
            let data_dir = self.data_dir.clone();
            Arc::new(tokio::task::spawn_blocking(move || Registry::open(&data_dir)).await??)
        };
        let present = {
            let registry = registry.clone();
            let target = target.clone();
            tokio::task::spawn_blocking(move || {
                registry
                    .get(&target.id.parse::<aq_pack::PackRef>().ok()?)
                    .ok()
                    .filter(|p| p.signed.digest().to_string() == target.digest)
            })
            .await?
            .is_some()
        };
        if !present {
            let policy = self.trust_policy()?;
            let digest = target.digest.clone();
            let fetched = crate::transfer::fetch_pack(
                self.remote.clone(),
                registry.clone(),
                &digest,
                &policy,
                false,
                SystemTime::now(),
                2,
                None,
            )
            .await
            .with_context(|| format!("failed to fetch {}", target.id))?;
            tracing::info!(pack = %fetched.id, chunks = fetched.chunks_downloaded, bytes = fetched.bytes_downloaded, "pack fetched");
        }
        let source = {
            let settings = self.model_settings.clone();
            let target = target.clone();
            let preferred = self.preferred_variants.clone();
            tokio::task::spawn_blocking(move || {
                model_source(&registry, &target, &preferred, settings)
            })
            .await??
        };
        self.server
            .put(&source)
            .await
            .with_context(|| format!("failed to load {}", target.id))?;
        if let Some(old) = &current.active
            && served_name(old) != served_name(&target)
        {
            self.server.remove(served_name(old));
        }
        Ok(())
    }

    /// Keeps the device's disk bounded: of the packs named like the active one, only the
    /// active and the previous (the rollback target) stay; chunks no pack needs go. Packs of
    /// other names (put there by hand) are left alone, and so are chunks of a fetch under way.
    /// Runs after the new state is saved, so a crash here loses nothing the state names.
    async fn prune(&self, state: &AgentState) {
        let Some(active) = state.active.clone() else {
            return;
        };
        let keep: Vec<String> = [Some(&active), state.previous.as_ref()]
            .into_iter()
            .flatten()
            .map(|t| t.id.clone())
            .collect();
        let data_dir = self.data_dir.clone();
        let pruned = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let registry = Registry::open(&data_dir)?;
            let name = served_name(&active).to_owned();
            let mut removed = Vec::new();
            for pack in registry.list()? {
                let id = format!("{}:{}", pack.name, pack.version);
                if pack.name != name || keep.contains(&id) {
                    continue;
                }
                registry.remove(&id.parse()?)?;
                removed.push(id);
            }
            if !removed.is_empty() {
                registry.gc_with_grace(PRUNE_GRACE, SystemTime::now())?;
            }
            Ok(removed)
        })
        .await;
        match pruned {
            Ok(Ok(removed)) if !removed.is_empty() => {
                tracing::info!(
                    ?removed,
                    "older packs removed; the active and previous stay"
                );
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "cannot prune older packs"),
            Err(e) => tracing::warn!(error = %e, "cannot prune older packs"),
        }
    }

    fn server_has(&self, name: &str) -> bool {
        self.server.served().iter().any(|n| n == name)
    }

    fn trust_policy(&self) -> anyhow::Result<TrustPolicy> {
        let path = self.data_dir.join("trust.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => TrustPolicy::parse(&text).with_context(|| format!("in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TrustPolicy::empty()),
            Err(e) => Err(e).with_context(|| format!("failed to read {}", path.display())),
        }
    }

    /// Publishes a signed report of the agent's state and health.
    async fn report(&self, client: &AsyncClient, status: &Mutex<Status>) {
        let health = self.server.health();
        let payload = {
            let mut s = status.lock().await;
            let now_ms = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            // Milliseconds keep the counter rising across restarts; +1 within a millisecond.
            s.last_report_seq = now_ms.max(s.last_report_seq + 1);
            let report = ReportedState {
                format_version: fleet::FLEET_FORMAT_VERSION,
                device: self.config.device.clone(),
                report_seq: s.last_report_seq,
                desired_seq: s.state.desired_seq,
                phase: s.phase,
                active: s.state.active.clone(),
                previous: s.state.previous.clone(),
                error: s.state.last_error.clone(),
                health: Health {
                    uptime_s: self.started.elapsed().as_secs(),
                    requests: health.requests,
                    errors: health.errors,
                    p95_ms: health.p95_seconds.map(|s| s * 1000.0),
                    load_errors: health.load_errors,
                },
                labels: self.config.labels.clone(),
                capabilities: Some(self.capabilities.clone()),
                sent_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            };
            fleet::seal(Kind::Reported, &report, &self.key)
        };
        let topic = fleet::reported_topic(&self.config.topic_prefix, &self.config.device);
        if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
            tracing::debug!(error = %e, "report not queued (the connection is down)");
        }
    }
}

/// Polls the MQTT connection (a failed poll reconnects on the next, with back-off), subscribes
/// on every connect, and passes on verified desired states.
async fn drive(
    agent: Arc<Agent>,
    mut eventloop: EventLoop,
    client: AsyncClient,
    desired: watch::Sender<Option<DesiredState>>,
    connected: watch::Sender<u64>,
) {
    let topic = fleet::desired_topic(&agent.config.topic_prefix, &agent.config.device);
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        Duration::from_secs(10),
        spread_seed(&agent.config.device),
    );
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                tracing::info!(broker = %agent.config.mqtt_url, "connected");
                // Sent from a task of its own: reports queued while the link was down can
                // fill the request queue, and this loop must keep polling to drain it. (A
                // `try_subscribe` here once failed on a full queue after a partition, and
                // with a clean session the device then never heard its desired state.)
                let (client, topic) = (client.clone(), topic.clone());
                tokio::spawn(async move {
                    if let Err(e) = client.subscribe(topic, QoS::AtLeastOnce).await {
                        tracing::warn!(error = %e, "subscribe failed");
                    }
                });
                connected.send_modify(|n| *n += 1);
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => {
                match fleet::open_desired(
                    &p.payload,
                    &agent.config.server_key,
                    &agent.config.device,
                ) {
                    Ok(d) => {
                        // Keep only the newest seen; the applier checks against what it applied.
                        desired.send_if_modified(|slot| {
                            if slot.as_ref().is_none_or(|s| d.seq > s.seq) {
                                *slot = Some(d);
                                true
                            } else {
                                false
                            }
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "desired state refused"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, "MQTT connection lost");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::transient;
    use crate::remote::RemoteError;

    #[test]
    fn an_unreachable_server_under_context_is_transient_a_bad_pack_is_not() {
        let down = anyhow::Error::new(RemoteError::Unreachable {
            url: "https://127.0.0.1:1".into(),
            message: "connection refused".into(),
        })
        .context("failed to fetch sig:2.0.0");
        assert!(transient(&down));
        let bad = anyhow::anyhow!("chunk blake3:00 does not match its digest")
            .context("failed to fetch sig:2.0.0");
        assert!(!transient(&bad));
    }
}
