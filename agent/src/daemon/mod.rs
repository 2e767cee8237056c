//! `aq agent run`: the device daemon. It follows its desired state over MQTT (signed by the
//! server, newer seq only), fetches and verifies packs over HTTPS, activates them atomically in
//! the model server (keeping the previous pack for instant rollback), and reports state and
//! health.

pub mod config;
pub mod state;
pub mod sync;
