//! A server's state on temporary files, opened the way [`crate::start`] opens it but with
//! no socket, for the in-process tests of the API and the MQTT side.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::fleet::Publish;
use crate::{State, bootstrap_admin, open_fleet, outbox, server_key, work};

pub(crate) struct TestServer {
    pub state: Arc<State>,
    /// What the handlers queued for MQTT.
    pub outbox: mpsc::Receiver<Publish>,
    /// The admin token the first start makes.
    pub admin: String,
    _dir: tempfile::TempDir,
}

/// A fresh server; `allow_unsigned` lets it take packs no trusted key signed.
pub(crate) fn server(allow_unsigned: bool) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let registry = aq_store::Registry::open(&dir.path().join("registry")).unwrap();
    let fleet = open_fleet(dir.path()).unwrap();
    crate::fleet::Fleet::init(&fleet).unwrap();
    let token_file = bootstrap_admin(&fleet, dir.path()).unwrap().unwrap();
    let admin = std::fs::read_to_string(token_file)
        .unwrap()
        .trim()
        .to_owned();
    let (publish, outbox) = outbox::Outbox::new(outbox::CAPACITY);
    let state = Arc::new(State {
        registry: Arc::new(registry),
        fleet: Arc::new(fleet),
        trust_path: dir.path().join("trust.toml"),
        allow_unsigned,
        max_body: 1 << 20,
        fleet_key: Arc::new(server_key(dir.path()).unwrap()),
        topic_prefix: "aq".into(),
        mqtt_url: "mqtt://127.0.0.1:1".into(),
        publish,
        work: work::WorkPool::new(2).unwrap(),
    });
    TestServer {
        state,
        outbox,
        admin,
        _dir: dir,
    }
}
