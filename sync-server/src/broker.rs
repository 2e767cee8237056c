//! The built-in MQTT broker (rumqttd, MQTT 3.1.1 over TCP) for the embedded default: nothing
//! else to install. The server talks to it through the same client code as to any external
//! broker. rumqttd keeps retained messages in memory only, so the server publishes every
//! desired state again whenever it (re)connects.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    #[error(
        "the built-in MQTT broker did not start listening on {0} (is the port in use? pick another with --mqtt-listen)"
    )]
    NotListening(SocketAddr),
    #[error("the built-in MQTT broker needs a fixed port, not 0")]
    EphemeralPort,
    #[error("failed to start the MQTT broker thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The running broker. It lives until the process ends (rumqttd has no shutdown).
#[derive(Debug)]
pub struct Embedded {
    addr: SocketAddr,
}

/// Most simultaneous MQTT connections (devices plus the server's own).
pub const MAX_CONNECTIONS: usize = 50_000;

impl Embedded {
    /// Starts the broker on `addr`; `prefix` is the fleet's topic prefix (its report filter
    /// gets a larger log).
    pub fn start(addr: SocketAddr, prefix: &str) -> Result<Embedded, BrokerError> {
        if addr.port() == 0 {
            return Err(BrokerError::EphemeralPort);
        }
        let connections = rumqttd::ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: aq_sync_proto::fleet::MAX_INCOMING_PACKET,
            max_inflight_count: 100,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
        };
        let mut v4 = HashMap::new();
        v4.insert(
            "v4".to_owned(),
            rumqttd::ServerSettings {
                name: "aq-mqtt".to_owned(),
                listen: addr,
                tls: None,
                next_connection_delay_ms: 0,
                connections,
            },
        );
        let config = rumqttd::Config {
            id: 0,
            router: rumqttd::RouterConfig {
                max_connections: MAX_CONNECTIONS,
                max_outgoing_packet_count: 200,
                // Per subscription filter, in memory: small, since every device has its own.
                max_segment_size: 64 * 1024,
                max_segment_count: 2,
                // Every device's reports flow through the server's one wildcard subscription.
                // rumqttd drops the oldest segment of a filter's log when it is full, so a
                // small log loses reports whenever the server falls behind a burst (a 10,000
                // device rollout lost 9%). 4 x 8 MiB holds a burst of about 40,000 reports;
                // heartbeats repeat anything lost beyond that.
                custom_segment: Some(HashMap::from([(
                    aq_sync_proto::fleet::reported_filter(prefix),
                    rumqttd::SegmentConfig {
                        max_segment_size: 8 << 20,
                        max_segment_count: 4,
                    },
                )])),
                initialized_filters: None,
                shared_subscriptions_strategy: Default::default(),
            },
            v4: Some(v4),
            ..Default::default()
        };
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // `start` blocks while the broker runs; returning at all is a failure.
                let result = broker.start();
                tracing::error!(?result, "the built-in MQTT broker stopped");
            })
            .map_err(BrokerError::Thread)?;
        // rumqttd gives no ready signal and only logs a failed bind: wait for the port.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(BrokerError::NotListening(addr));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Embedded { addr })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}
