//! The whole fleet flow with real processes: `aq-sync`, several `aq agent run` devices with
//! their own data directories, the built-in broker or Debian's mosquitto, signed packs pushed
//! and rolled out in steps, predictions on each device, rollback, automatic abort, a server
//! crash in the middle of a rollout, an offline device, an agent killed mid-download, and
//! hostile MQTT messages.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{Agent, Mosquitto, Server, fixture, noise, save, shared_key, wait_for};

/// A sigmoid input: [3, 4, 5] f32.
fn sigmoid_input() -> Value {
    json!({ "inputs": { "x": { "shape": [3, 4, 5], "data": vec![0.25f32; 60] } } })
}

fn rollout(server: &Server, token: &str, id: &str) -> Value {
    let r = server.call(
        "GET",
        &format!("/v1/rollouts/{id}"),
        Some(token),
        None,
        vec![],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn wait_phase(server: &Server, token: &str, id: &str, phase: &str) -> Value {
    wait_for(&format!("rollout {id} to be {phase}"), 90, || {
        let r = rollout(server, token, id);
        (r["phase"] == phase).then_some(r)
    })
}

fn wait_serving(agents: &[&Agent], version: &str) {
    for a in agents {
        wait_for(&format!("{} to serve sig {version}", a.device), 90, || {
            (a.serving("sig", &sigmoid_input()).as_deref() == Some(version)).then_some(())
        });
    }
}

fn deploy(server: &Server, data: &Path, token: &str, pack: &str, extra: &[&str]) -> String {
    let mut args = vec!["deploy", pack, "--selector", "site=berlin"];
    args.extend_from_slice(extra);
    let v = server.aq_json(data, token, &args);
    v["rollout"]["id"].as_str().unwrap().to_owned()
}

fn fleet_flow(server: &mut Server, dir: &Path) {
    let publisher = server.token("ci", "publisher");
    let enrollment = server.token("factory", "enroller");
    let publ = dir.join("publisher");
    let key = shared_key(dir, server, &[]);
    let model = fixture("sigmoid.onnx");
    save(&publ, &model, "sig", "1.0.0", &key, &[]);
    save(&publ, &model, "sig", "2.0.0", &key, &[]);
    save(&publ, &model, "sig", "4.0.0", &key, &[]);
    // A pack that verifies but that no engine of aq loads (logreg_iris is inconsistent: 2
    // features declared, 4 used): the server refuses its rollout, and every device that gets
    // it anyway fails.
    save(
        &publ,
        &fixture("logreg_iris.onnx"),
        "sig",
        "3.0.0",
        &key,
        &[],
    );

    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let data = dir.join(format!("device{i}"));
            Agent::enroll(
                server,
                &data,
                &enrollment,
                &["site=berlin", &format!("n={i}")],
            );
            Agent::start(&data)
        })
        .collect();
    let all: Vec<&Agent> = agents.iter().collect();

    // 1.0.0 everywhere in one step.
    let r1 = deploy(server, &publ, &publisher, "sig:1.0.0", &["--steps", "100"]);
    wait_phase(server, &publisher, &r1, "completed");
    wait_serving(&all, "1.0.0");

    // 2.0.0 to a canary of one device, then the server crashes mid-rollout and comes back.
    let r2 = deploy(
        server,
        &publ,
        &publisher,
        "sig:2.0.0",
        &["--steps", "10,100"],
    );
    let status = wait_for("the canary to succeed", 90, || {
        let r = rollout(server, &publisher, &r2);
        (r["counts"]["succeeded"] == 1).then_some(r)
    });
    assert_eq!(status["counts"]["waiting"], 2, "{status}");
    let versions: Vec<Option<String>> = agents
        .iter()
        .map(|a| a.serving("sig", &sigmoid_input()))
        .collect();
    assert_eq!(
        versions
            .iter()
            .filter(|v| v.as_deref() == Some("2.0.0"))
            .count(),
        1,
        "{versions:?}"
    );
    assert_eq!(
        versions
            .iter()
            .filter(|v| v.as_deref() == Some("1.0.0"))
            .count(),
        2,
        "{versions:?}"
    );
    server.restart();
    let after = rollout(server, &publisher, &r2);
    assert_eq!(
        (after["phase"].clone(), after["step"].clone()),
        (json!("running"), json!(0))
    );
    // A variant of the version in this live rollout would change the digest its devices were
    // told: the server refuses it until the rollout is over.
    server.aq_json(
        &publ,
        &publisher,
        &[
            "export",
            "sig:2.0.0",
            "--target",
            "tflite",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    let err = server.aq_fails(&publ, &publisher, &["pack", "push", "sig:2.0.0"], 6);
    assert!(err.contains(&format!("live rollout {r2}")), "{err}");
    server.aq_json(&publ, &publisher, &["rollout", "advance", &r2]);
    wait_phase(server, &publisher, &r2, "completed");
    wait_serving(&all, "2.0.0");

    // Roll back: every device serves 1.0.0 again, from its own registry.
    let back = server.aq_json(&publ, &publisher, &["rollout", "rollback", &r2]);
    assert_eq!(back["phase"], "rolled_back");
    wait_serving(&all, "1.0.0");

    // The devices reported what they run: a rollout of a pack none of them can run is
    // refused before it reaches one, naming each device and the reason.
    let refused = server.aq_fails(
        &publ,
        &publisher,
        &["deploy", "sig:3.0.0", "--selector", "site=berlin"],
        6,
    );
    assert!(
        refused.contains("3 selected device(s) cannot run sig:3.0.0"),
        "{refused}"
    );
    for a in &agents {
        assert!(refused.contains(&a.device), "{refused}");
    }
    assert!(refused.contains("LinearClassifier"), "{refused}");
    // Forced, a pack that fails to load aborts its rollout by itself and rolls the canaries
    // back.
    let r3 = deploy(
        server,
        &publ,
        &publisher,
        "sig:3.0.0",
        &["--steps", "34,100", "--max-failure", "5%", "--force"],
    );
    let aborted = wait_phase(server, &publisher, &r3, "aborted");
    assert!(
        aborted["reason"].as_str().unwrap().contains("failed"),
        "{aborted}"
    );
    assert_eq!(
        aborted["step"], 0,
        "the abort came before the second step: {aborted}"
    );
    wait_serving(&all, "1.0.0");
    let devices = server
        .call("GET", "/v1/devices", Some(&publisher), None, vec![])
        .json();
    let failed_reports = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| {
            d["reported"]["health"]["load_errors"].as_u64().unwrap_or(0) > 0
                || d["reported"]["error"].is_string()
        })
        .count();
    assert!(failed_reports >= 1, "{devices}");
    // The CLI shows the same story.
    let listed = server.aq_json(&publ, &publisher, &["rollout", "status"]);
    let phases: Vec<&str> = listed["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["completed", "rolled_back", "aborted"]);

    // 4.0.0 everywhere: each device keeps its active pack and the previous one (1.0.0, the
    // rollback target) and nothing older: 2.0.0 goes, and so does 3.0.0 where it was
    // fetched and failed. What stays verifies.
    let r4 = deploy(server, &publ, &publisher, "sig:4.0.0", &["--steps", "100"]);
    wait_phase(server, &publisher, &r4, "completed");
    wait_serving(&all, "4.0.0");
    for i in 0..agents.len() {
        let data = dir.join(format!("device{i}"));
        // The agent holds its registry open only while it changes it: ask until it answers.
        let held = wait_for(
            "the device to keep only its active and previous packs",
            60,
            || {
                let out = server.aq(&data, &publisher, &["--json", "pack", "list"]);
                let packs: Value = serde_json::from_slice(&out.stdout).ok()?;
                let held: Vec<String> = packs
                    .as_array()?
                    .iter()
                    .map(|p| format!("{}:{}", p["name"], p["version"]).replace('"', ""))
                    .collect();
                (held == ["sig:1.0.0", "sig:4.0.0"]).then_some(held)
            },
        );
        for id in held {
            let verified = server.aq(&data, &publisher, &["pack", "verify", &id]);
            assert!(
                verified.status.success(),
                "{id}: {}",
                String::from_utf8_lossy(&verified.stderr)
            );
        }
    }
}

#[test]
fn fleet_rollout_with_the_built_in_broker() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("srv"));
    fleet_flow(&mut server, dir.path());
}

#[test]
fn fleet_rollout_with_mosquitto() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(dir.path());
    let url = broker.url();
    let mut server = Server::start_on(
        &dir.path().join("srv"),
        "127.0.0.1:0",
        &["--mqtt-url", &url],
    );
    fleet_flow(&mut server, dir.path());
}

#[test]
fn offline_and_interrupted_devices_converge_and_ignore_hostile_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let publisher = server.token("ci", "publisher");
    let enrollment = server.token("factory", "enroller");
    let publ = dir.path().join("publisher");
    let key = shared_key(dir.path(), &server, &[]);
    let weights = dir.path().join("weights.bin");
    std::fs::write(&weights, noise(24 << 20, 3)).unwrap();
    save(
        &publ,
        &fixture("sigmoid.onnx"),
        "sig",
        "1.0.0",
        &key,
        &["--file", weights.to_str().unwrap()],
    );

    let online_data = dir.path().join("online");
    let offline_data = dir.path().join("offline");
    Agent::enroll(&server, &online_data, &enrollment, &["site=berlin"]);
    let offline_id = Agent::enroll(&server, &offline_data, &enrollment, &["site=berlin"]);
    let online = Agent::start(&online_data);

    // One device is off while the rollout runs.
    let r1 = deploy(&server, &publ, &publisher, "sig:1.0.0", &["--steps", "100"]);
    wait_serving(&[&online], "1.0.0");
    assert_eq!(rollout(&server, &publisher, &r1)["phase"], "running");

    // It comes up, is killed while it downloads the 24 MB pack, and comes up again.
    let mut interrupted = Agent::start(&offline_data);
    std::thread::sleep(std::time::Duration::from_millis(700));
    interrupted.kill();
    let back = Agent::start(&offline_data);
    wait_serving(&[&back], "1.0.0");
    wait_phase(&server, &publisher, &r1, "completed");

    // Replayed, stale and forged desired states change nothing.
    let state_before = std::fs::read_to_string(offline_data.join("agent-state.json")).unwrap();
    let server_key = aq_pack::keys::SecretKey::from_file_text(
        &std::fs::read_to_string(server.data.join("server.key")).unwrap(),
    )
    .unwrap();
    let stale = aq_sync_proto::fleet::DesiredState {
        format_version: 1,
        device: offline_id.clone(),
        seq: 1,
        pack: None,
        rollout: None,
        issued_at: "2026-01-01T00:00:00Z".into(),
    };
    let forged = aq_sync_proto::fleet::DesiredState {
        seq: 1_000,
        ..stale.clone()
    };
    let stranger = aq_pack::keys::SecretKey::from_seed([7; 32]);
    let messages = vec![
        aq_sync_proto::fleet::seal(aq_sync_proto::fleet::Kind::Desired, &stale, &server_key),
        aq_sync_proto::fleet::seal(aq_sync_proto::fleet::Kind::Desired, &forged, &stranger),
        b"{not json".to_vec(),
        vec![0u8; 200_000],
    ];
    let mqtt_port: u16 = server
        .args
        .iter()
        .skip_while(|a| *a != "--mqtt-listen")
        .nth(1)
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap();
    publish_raw(
        mqtt_port,
        &format!("aq/devices/{offline_id}/desired"),
        messages,
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert_eq!(
        back.serving("sig", &sigmoid_input()).as_deref(),
        Some("1.0.0")
    );
    assert_eq!(
        std::fs::read_to_string(offline_data.join("agent-state.json")).unwrap(),
        state_before
    );

    // Reports that are forged or replayed are refused by the server (its log says why); the
    // device list still shows the real state.
    let device = server
        .call(
            "GET",
            &format!("/v1/devices/{offline_id}"),
            Some(&publisher),
            None,
            vec![],
        )
        .json();
    assert_eq!(device["reported"]["active"]["id"], "sig:1.0.0");

    // The pack on the device verifies end to end once the agent is stopped.
    drop(back);
    drop(online);
    let out = server.aq(&offline_data, "", &["pack", "verify", "sig:1.0.0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Publishes messages (not retained) with a throwaway MQTT client and waits for their acks.
fn publish_raw(port: u16, topic: &str, payloads: Vec<Vec<u8>>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut options = rumqttc::MqttOptions::new("intruder", "127.0.0.1", port);
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 16);
        let n = payloads.len();
        for p in payloads {
            client
                .publish(topic, rumqttc::QoS::AtLeastOnce, false, p)
                .await
                .unwrap();
        }
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while acked < n && tokio::time::Instant::now() < deadline {
            if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
                tokio::time::timeout(std::time::Duration::from_secs(1), eventloop.poll()).await
            {
                acked += 1;
            }
        }
        assert_eq!(acked, n, "the broker did not take every message");
    });
}

#[test]
fn enrollment_needs_the_enroller_role_and_proof_of_the_device_key() {
    use aq_pack::keys::SecretKey;
    use aq_sync_proto::fleet::EnrollRequest;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let enroller = server.token("factory", "enroller");
    let json_ct = Some("application/json");
    let challenge = |token: &str| -> String {
        let r = server.call(
            "POST",
            "/v1/devices/enroll/challenge",
            Some(token),
            None,
            vec![],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["nonce"].as_str().unwrap().to_owned()
    };
    let enroll = |token: &str, req: &EnrollRequest| {
        server.call(
            "POST",
            "/v1/devices/enroll",
            Some(token),
            json_ct,
            serde_json::to_vec(req).unwrap(),
        )
    };
    let labels = |site: &str| [("site".to_owned(), site.to_owned())].into();
    let device = SecretKey::from_seed([11; 32]);
    let thief = SecretKey::from_seed([12; 32]);

    // Viewers, publishers and devices can neither ask for a challenge nor enroll.
    let first = EnrollRequest::sign(&device, labels("berlin"), None, challenge(&enroller));
    for role in ["viewer", "publisher", "device"] {
        let token = server.token(&format!("t-{role}"), role);
        server
            .call(
                "POST",
                "/v1/devices/enroll/challenge",
                Some(&token),
                None,
                vec![],
            )
            .refused(403, "forbidden");
        enroll(&token, &first).refused(403, "forbidden");
    }
    // An enroller token reads nothing else.
    server
        .call("GET", "/v1/packs", Some(&enroller), None, vec![])
        .refused(403, "forbidden");

    // The key's holder enrolls; the nonce is then spent.
    let r = enroll(&enroller, &first);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["device"].as_str().unwrap().to_owned();
    enroll(&enroller, &first).refused(403, "enrollment_refused");

    // Someone without the device key cannot relabel it: a request for its public key signed
    // by another key, on a fresh nonce, is refused, and so is one with a forged proof.
    let mut forged = EnrollRequest::sign(&thief, labels("paris"), None, challenge(&enroller));
    forged.public_key = device.public_key();
    enroll(&enroller, &forged).refused(403, "enrollment_refused");
    let mut tampered = EnrollRequest::sign(&device, labels("berlin"), None, challenge(&enroller));
    tampered.labels = labels("paris");
    enroll(&enroller, &tampered).refused(403, "enrollment_refused");
    // A nonce the server never issued.
    let made_up = EnrollRequest::sign(&device, labels("paris"), None, "0".repeat(64));
    enroll(&enroller, &made_up).refused(403, "enrollment_refused");
    let devices = server.admin_json("GET", "/v1/devices", json!(null), 200);
    let all = devices["devices"].as_array().unwrap();
    assert_eq!(all.len(), 1, "{devices}");
    assert_eq!(all[0]["labels"]["site"], "berlin", "{devices}");

    // The holder can relabel it (a new challenge, signed again).
    let again = EnrollRequest::sign(&device, labels("paris"), None, challenge(&enroller));
    let r = enroll(&enroller, &again);
    assert_eq!(r.status, 200, "{}", r.text());
    let got = server.admin_json("GET", &format!("/v1/devices/{id}"), json!(null), 200);
    assert_eq!(got["labels"]["site"], "paris", "{got}");
}
