//! The server's MQTT side: one client connection to the broker (the embedded one or any
//! external broker, through the same code): it publishes desired states (retained, QoS 1),
//! takes device reports, and ticks the rollout rules once a second.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aq_sync_proto::backoff::Backoff;
use aq_sync_proto::fleet;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::api::State;
use crate::fleet::{Fleet, FleetError, Publish};

/// Options for a client id on a broker.
pub fn options(client_id: &str, url: &str) -> Result<MqttOptions, String> {
    let (host, port) = fleet::parse_mqtt_url(url)?;
    let mut options = MqttOptions::new(client_id, host, port);
    options.set_keep_alive(Duration::from_secs(15));
    options.set_clean_session(false);
    // Read what the broker lets through (oversized messages are then refused one by one)
    // rather than drop the connection on them.
    options.set_max_packet_size(fleet::MAX_INCOMING_PACKET, fleet::MAX_MESSAGE_BYTES * 2);
    Ok(options)
}

async fn fleet_call<T: Send + 'static>(
    state: &Arc<State>,
    f: impl FnOnce(&Fleet<'_>) -> Result<T, FleetError> + Send + 'static,
) -> Result<T, FleetError> {
    let state = state.clone();
    // Device reports are never refused for load.
    let pool = state.clone();
    pool.work
        .run(move || {
            let fleet = Fleet::new(&state.fleet, &state.fleet_key, &state.topic_prefix)?;
            f(&fleet)
        })
        .await
        .map_err(|e| FleetError::Invalid(format!("fleet task failed: {e}")))?
}

/// Runs until the process ends: the broker connection (reconnecting with back-off), the
/// publisher, report handling and the rollout tick.
pub async fn run(state: Arc<State>, options: MqttOptions, mut outbox: mpsc::Receiver<Publish>) {
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let (inbox_tx, inbox) = mpsc::channel::<Incoming>(INBOX);
    tokio::spawn(drive(eventloop, inbox_tx));
    // Reports and the rollout tick run beside the publisher, so a rollout's desired states
    // never wait behind report processing; what they produce goes through the outbox.
    tokio::spawn(take_reports(state.clone(), client.clone(), inbox));
    tokio::spawn(tick(state.clone()));
    let mut published: u64 = 0;
    while let Some(p) = outbox.recv().await {
        publish(&client, p).await;
        published += 1;
        if published.is_multiple_of(1000) {
            tracing::debug!(published, "desired states published");
        }
    }
}

/// Records device reports in batches (one transaction each). The rollout rules run on the
/// tick, not per batch: one pass over the fleet a second, whatever the report rate.
async fn take_reports(state: Arc<State>, client: AsyncClient, mut inbox: mpsc::Receiver<Incoming>) {
    while let Some(first) = inbox.recv().await {
        let mut batch = Vec::new();
        let mut reconnected = false;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            match item {
                Incoming::Report { topic, payload } => {
                    if let Some(device) =
                        fleet::device_of_reported_topic(&state.topic_prefix, &topic)
                    {
                        batch.push((device.to_owned(), payload));
                    }
                }
                Incoming::Connected => reconnected = true,
            }
            if batch.len() < MAX_REPORT_BATCH {
                next = inbox.try_recv().ok();
            }
        }
        if reconnected {
            republish(&state, &client).await;
        }
        if batch.is_empty() {
            continue;
        }
        let count = batch.len();
        let started = std::time::Instant::now();
        match fleet_call(&state, move |f| f.reports(&batch, SystemTime::now())).await {
            Ok(refused) => {
                for (device, e) in refused {
                    tracing::warn!(%device, error = %e, "report refused");
                }
                let took = started.elapsed();
                if took > SLOW {
                    tracing::warn!(
                        reports = count,
                        ms = took.as_millis() as u64,
                        "slow report batch"
                    );
                } else {
                    tracing::debug!(reports = count, "reports taken");
                }
            }
            Err(e) => tracing::error!(error = %e, "reports could not be recorded"),
        }
    }
}

/// How long a live device may lag its desired state before it is sent again.
const RESEND_AFTER: Duration = Duration::from_secs(15);
/// A device that reported within this long counts as live.
const LIVE_WITHIN: Duration = Duration::from_secs(120);

async fn tick(state: Arc<State>) {
    let mut tick = tokio::time::interval(Fleet::TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        if ticks.is_multiple_of(RESEND_AFTER.as_secs()) {
            match fleet_call(&state, |f| {
                f.unacknowledged(SystemTime::now(), RESEND_AFTER, LIVE_WITHIN)
            })
            .await
            {
                Ok(out) => {
                    if !out.is_empty() {
                        tracing::info!(
                            devices = out.len(),
                            "desired states sent again to devices that lag"
                        );
                    }
                    for p in out {
                        state.publish.push(p);
                    }
                }
                Err(e) => tracing::error!(error = %e, "resend scan failed"),
            }
        }
        let started = std::time::Instant::now();
        match fleet_call(&state, |f| f.tick(SystemTime::now())).await {
            Ok(out) => {
                let took = started.elapsed();
                if took > SLOW {
                    tracing::warn!(ms = took.as_millis() as u64, "slow rollout tick");
                }
                for p in out {
                    state.publish.push(p);
                }
            }
            Err(e) => tracing::error!(error = %e, "rollout tick failed"),
        }
    }
}

/// A report batch or rollout tick that takes longer than this is logged: the fleet store is
/// falling behind.
const SLOW: Duration = Duration::from_millis(500);

/// Reports waiting to be recorded before new ones are dropped.
const INBOX: usize = 65_536;

/// Most reports taken in one transaction.
const MAX_REPORT_BATCH: usize = 2048;

/// On every (re)connection: subscribe to reports, and publish every desired state again (the
/// broker may have lost its retained messages, as an in-memory broker does on restart).
/// Devices ignore repeats.
async fn republish(state: &Arc<State>, client: &AsyncClient) {
    let filter = fleet::reported_filter(&state.topic_prefix);
    if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
        tracing::warn!(error = %e, "subscribe failed");
    }
    match fleet_call(state, |f| f.all_desired()).await {
        Ok(all) => {
            tracing::info!(
                devices = all.len(),
                "connected to the broker; desired states republished"
            );
            for p in all {
                publish(client, p).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read desired states"),
    }
}

async fn publish(client: &AsyncClient, p: Publish) {
    if let Err(e) = client
        .publish(p.topic.clone(), QoS::AtLeastOnce, true, p.payload)
        .await
    {
        tracing::warn!(topic = %p.topic, error = %e, "publish failed");
    }
}

enum Incoming {
    Connected,
    Report { topic: String, payload: Vec<u8> },
}

/// Polls the connection; a failed poll is followed by a reconnect on the next one.
async fn drive(mut eventloop: EventLoop, inbox: mpsc::Sender<Incoming>) {
    let mut backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        u64::from(std::process::id()),
    );
    let mut dropped: u64 = 0;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff.reset();
                // Queued from a task of its own, so a full inbox never stalls this loop.
                let tx = inbox.clone();
                tokio::spawn(async move {
                    let _ = tx.send(Incoming::Connected).await;
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let message = Incoming::Report {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                };
                // Never wait here: this loop also sends the desired states and answers the
                // broker's keep-alive. When reports come faster than they are recorded, the
                // surplus is dropped; every device repeats its report on its heartbeat.
                match inbox.try_send(message) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped += 1;
                        if dropped.is_power_of_two() {
                            tracing::warn!(
                                dropped,
                                "reports arrive faster than they are recorded; dropping (devices repeat them)"
                            );
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
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
mod tests;
