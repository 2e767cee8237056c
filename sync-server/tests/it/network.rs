//! Network faults during rollouts, with real processes: the MQTT broker (mosquitto, without
//! persistence) restarting in the middle of a rollout, one device's link (its MQTT and HTTPS
//! connections) partitioned for a minute while a rollout runs, and the server killed and
//! restarted in the middle of one. Every device converges on every rollout, the server hears
//! every device's result (counted per rollout), and no device loads a desired state twice
//! (counted by its model reloads).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Agent, Mosquitto, Proxy, Server, fixture, save, shared_key, wait_for};

/// How long the partition lasts: `AQ_LINK_DOWN_SECS`, a minute by default.
fn link_down() -> Duration {
    Duration::from_secs(
        std::env::var("AQ_LINK_DOWN_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    )
}

fn sigmoid_input() -> Value {
    json!({ "inputs": { "x": { "shape": [3, 4, 5], "data": vec![0.25f32; 60] } } })
}

/// `aq_model_reloads_total{model="sig",result=R}` on a device.
fn reloads(agent: &Agent, result: &str) -> u64 {
    let r = aq_test_support::http(&agent.addr, "GET", "/metrics", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let series = format!("aq_model_reloads_total{{model=\"sig\",result=\"{result}\"}} ");
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .unwrap_or_else(|| panic!("no {series} in {}", r.text()))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn broker_restart_partition_and_server_crash_lose_no_result_and_apply_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(dir.path());
    let mut server = Server::start_on(
        &dir.path().join("srv"),
        "127.0.0.1:0",
        &["--mqtt-url", &broker.url()],
    );
    let publisher = server.token("ci", "publisher");
    let enroller = server.token("factory", "enroller");
    let publ = dir.path().join("publisher");
    let key = shared_key(dir.path(), &server, &[]);
    let versions = ["1.0.0", "2.0.0", "3.0.0", "4.0.0"];
    for v in versions {
        save(&publ, &fixture("sigmoid.onnx"), "sig", v, &key, &[]);
    }

    // Three devices; the third reaches the server and the broker through a link that can go
    // down.
    let (mqtt_link, https_link) = (
        Proxy::start(&format!("127.0.0.1:{}", broker.port)),
        Proxy::start(&server.addr()),
    );
    let agents: Vec<Agent> = (0..3)
        .map(|i| {
            let data = dir.path().join(format!("device{i}"));
            Agent::enroll(&server, &data, &enroller, &["site=berlin"]);
            if i == 2 {
                let config = data.join("agent.toml");
                let text = std::fs::read_to_string(&config)
                    .unwrap()
                    .replace(&server.addr(), &https_link.addr())
                    .replace(&format!("127.0.0.1:{}", broker.port), &mqtt_link.addr());
                assert!(text.contains(&mqtt_link.addr()), "{text}");
                assert!(text.contains(&https_link.addr()), "{text}");
                std::fs::write(&config, text).unwrap();
            }
            Agent::start(&data)
        })
        .collect();
    let serving = |agents: &[&Agent], version: &str, secs: u64| {
        for a in agents {
            wait_for(
                &format!("{} to serve sig {version}", a.device),
                secs,
                || (a.serving("sig", &sigmoid_input()).as_deref() == Some(version)).then_some(()),
            );
        }
    };
    let all: Vec<&Agent> = agents.iter().collect();
    let deploy = |server: &Server, version: &str| -> String {
        let v = server.aq_json(
            &publ,
            &publisher,
            &[
                "deploy",
                &format!("sig:{version}"),
                "--selector",
                "site=berlin",
                "--steps",
                "100",
            ],
        );
        v["rollout"]["id"].as_str().unwrap().to_owned()
    };
    let rollout = |server: &Server, id: &str| -> Value {
        let r = server.call(
            "GET",
            &format!("/v1/rollouts/{id}"),
            Some(&publisher),
            None,
            vec![],
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    };
    let completed = |server: &Server, id: &str, secs: u64| -> Value {
        wait_for(&format!("rollout {id} to complete"), secs, || {
            let r = rollout(server, id);
            (r["phase"] == "completed").then_some(r)
        })
    };
    let mut results = Vec::new();

    // 1. A rollout with nothing wrong.
    let r1 = deploy(&server, versions[0]);
    serving(&all, versions[0], 60);
    results.push(completed(&server, &r1, 60));

    // 2. The broker dies the moment the rollout starts and comes back empty: no session, no
    // retained desired state. The server republishes what devices have not acknowledged.
    let r2 = deploy(&server, versions[1]);
    broker.restart();
    serving(&all, versions[1], 120);
    results.push(completed(&server, &r2, 60));

    // 3. The third device's link goes down for a minute while a rollout runs: the others
    // move, it cannot, the rollout waits for it; the link comes back and it catches up.
    mqtt_link.set_down(true);
    https_link.set_down(true);
    let cut = Instant::now();
    let r3 = deploy(&server, versions[2]);
    serving(&all[..2], versions[2], 60);
    std::thread::sleep(link_down().saturating_sub(cut.elapsed()));
    assert_eq!(
        agents[2].serving("sig", &sigmoid_input()).as_deref(),
        Some(versions[1]),
        "the partitioned device kept serving what it had"
    );
    let during = rollout(&server, &r3);
    assert_eq!(during["phase"], "running", "{during}");
    mqtt_link.set_down(false);
    https_link.set_down(false);
    serving(&all[2..], versions[2], 180);
    results.push(completed(&server, &r3, 120));

    // 4. The server is killed the moment the rollout starts, and restarts.
    let r4 = deploy(&server, versions[3]);
    server.restart();
    serving(&all, versions[3], 120);
    results.push(completed(&server, &r4, 60));

    // Counted: each of the four rollouts heard all three devices succeed and none fail.
    let counts: Vec<(u64, u64)> = results
        .iter()
        .map(|r| {
            (
                r["counts"]["succeeded"].as_u64().unwrap(),
                r["counts"]["failed"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    eprintln!("per rollout (succeeded, failed): {counts:?}");
    assert_eq!(counts, vec![(3, 0); 4], "{results:?}");
    // Each device loaded each version once: three hot reloads after the first load, none
    // failed. A desired state applied twice would reload again.
    for a in &agents {
        assert_eq!(
            (reloads(a, "ok"), reloads(a, "failed")),
            (3, 0),
            "device {}",
            a.device
        );
    }
    // And the server's record of each device is the last desired state, applied.
    let devices = server
        .call("GET", "/v1/devices", Some(&publisher), None, vec![])
        .json();
    for d in devices["devices"].as_array().unwrap() {
        assert_eq!(d["reported"]["phase"], "applied", "{d}");
        assert_eq!(d["reported"]["desired_seq"], d["desired"]["seq"], "{d}");
        assert_eq!(d["reported"]["active"]["id"], "sig:4.0.0", "{d}");
    }
}
