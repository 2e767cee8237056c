//! The server's MQTT side in this process against the built-in broker (real rumqttd on
//! loopback) and a device client: desired states go out retained and signed on connection,
//! sealed reports are recorded and drive the rollout tick, forged ones are not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use aq_pack::keys::SecretKey;
use aq_sync_proto::fleet::{
    self as proto, EnrollRequest, Kind, PackTarget, Phase, ReportedState, RolloutPhase,
    RolloutRequest,
};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::*;
use crate::testing;

fn report(
    device: &str,
    key: &SecretKey,
    report_seq: u64,
    desired_seq: u64,
    active: &PackTarget,
) -> Vec<u8> {
    let r = ReportedState {
        format_version: 1,
        device: device.into(),
        report_seq,
        desired_seq,
        phase: Phase::Applied,
        active: Some(active.clone()),
        previous: None,
        error: None,
        health: Default::default(),
        labels: Default::default(),
        capabilities: None,
        sent_at: "2026-12-04T10:00:00Z".into(),
    };
    proto::seal(Kind::Reported, &r, key)
}

/// Connects as `client_id`, subscribes to `topic` and waits for its first message: the
/// client, whether the broker sent it as retained, and its payload.
async fn first_message(port: u16, client_id: &str, topic: &str) -> (AsyncClient, bool, Vec<u8>) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    client.subscribe(topic, QoS::AtLeastOnce).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let wanted = topic.to_owned();
    // The connection lives on after the first message, for the client's later publishes.
    tokio::spawn(async move {
        let mut tx = Some(tx);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == wanted => {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send((p.retain, p.payload.to_vec()));
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    let (retained, payload) = tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .unwrap_or_else(|_| panic!("no message on {topic} reached {client_id}"))
        .unwrap();
    (client, retained, payload)
}

/// Asks `check` every 20 ms until it answers or `within` passes.
async fn eventually<T>(within: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn desired_states_go_out_on_connection_and_only_sealed_reports_count() {
    let server = testing::server(true);
    let state = server.state.clone();
    let key = SecretKey::from_seed([3; 32]);
    let target = PackTarget {
        id: "m:1.0.0".into(),
        digest: format!("blake3:{}", "ab".repeat(32)),
    };
    let (device, rollout) = {
        let fleet = Fleet::new(&state.fleet, &state.fleet_key, &state.topic_prefix).unwrap();
        let nonce = fleet.enroll_challenge(SystemTime::now()).unwrap().nonce;
        let request = EnrollRequest::sign(&key, BTreeMap::new(), None, nonce);
        let (info, _token) = fleet.enroll(&request, SystemTime::now()).unwrap();
        let request = RolloutRequest {
            pack: target.id.clone(),
            selector: BTreeMap::new(),
            steps: vec![100],
            max_failure: 0.5,
            soak_s: None,
            force: false,
        };
        // What this returns to publish is dropped: the connection's republish must send it.
        let (status, _) = fleet
            .create_rollout(&request, target.clone(), SystemTime::now())
            .unwrap();
        (info.device, status.id)
    };
    let outbox = server.outbox;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        crate::broker::Embedded::start(([127, 0, 0, 1], port).into(), "aq").unwrap();
        let url = format!("mqtt://127.0.0.1:{port}");
        tokio::spawn(run(
            state.clone(),
            options("aq-sync", &url).unwrap(),
            outbox,
        ));

        let desired_topic = proto::desired_topic("aq", &device);
        let (client, _retained, payload) = first_message(port, &device, &desired_topic).await;
        let desired =
            proto::open_desired(&payload, &state.fleet_key.public_key(), &device).unwrap();
        assert_eq!(desired.pack.as_ref(), Some(&target));

        // A report sealed by another key, numbered ahead: if it counted, the true report
        // below would be stale and never recorded.
        let reported_topic = proto::reported_topic("aq", &device);
        let forged = report(
            &device,
            &SecretKey::from_seed([4; 32]),
            9,
            desired.seq,
            &target,
        );
        client
            .publish(reported_topic.clone(), QoS::AtLeastOnce, false, forged)
            .await
            .unwrap();
        let sealed = report(&device, &key, 1, desired.seq, &target);
        client
            .publish(reported_topic, QoS::AtLeastOnce, false, sealed)
            .await
            .unwrap();
        let fleet_state = state.clone();
        let recorded = eventually(Duration::from_secs(30), || {
            let fleet = Fleet::new(
                &fleet_state.fleet,
                &fleet_state.fleet_key,
                &fleet_state.topic_prefix,
            )
            .unwrap();
            fleet.device(&device).unwrap().reported
        })
        .await
        .expect("the sealed report was never recorded");
        assert_eq!(recorded.report_seq, 1, "the forged report was recorded");

        // The tick sees the one device run the pack and completes the one-step rollout.
        let phase = eventually(Duration::from_secs(30), || {
            let fleet = Fleet::new(
                &fleet_state.fleet,
                &fleet_state.fleet_key,
                &fleet_state.topic_prefix,
            )
            .unwrap();
            let phase = fleet.rollout(&rollout).unwrap().phase;
            (phase == RolloutPhase::Completed).then_some(phase)
        })
        .await;
        assert_eq!(phase, Some(RolloutPhase::Completed));

        // Long after the server published, a new subscriber still gets it: it was retained.
        let (_, retained, again) =
            first_message(port, "late-reader", &proto::desired_topic("aq", &device)).await;
        assert!(retained, "the desired state was not published retained");
        let again = proto::open_desired(&again, &state.fleet_key.public_key(), &device).unwrap();
        assert_eq!(again.seq, desired.seq);
    });
}

#[test]
fn broker_addresses_are_checked() {
    assert!(options("aq-sync", "http://127.0.0.1:1883").is_err());
    assert!(options("aq-sync", "mqtt://").is_err());
    assert!(options("aq-sync", "mqtt://127.0.0.1:1883").is_ok());
    assert!(matches!(
        crate::broker::Embedded::start(([127, 0, 0, 1], 0).into(), "aq"),
        Err(crate::broker::BrokerError::EphemeralPort)
    ));
}
