//! The bounded queue of desired states between the code that commits them (API handlers,
//! the rollout tick, the resend scan) and the one MQTT publisher.
//!
//! When it is full (the broker is down or slower than rollouts produce), a new message is
//! dropped, counted and logged rather than held: the change is already committed, and a
//! device that misses its message is repaired by the resend scan (every 15 s, to devices
//! that report an older seq) and by the full republish on every broker reconnection. So
//! memory stays bounded and no request waits on the broker.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::mpsc;

use crate::fleet::Publish;

/// Desired states waiting to be published before new ones are dropped (about 1 KiB each).
pub const CAPACITY: usize = 65_536;

/// The sending side, shared by everything that commits desired states.
#[derive(Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Publish>,
    dropped: AtomicU64,
}

impl Outbox {
    /// An outbox of `capacity` messages and the publisher's end of it.
    pub fn new(capacity: usize) -> (Outbox, mpsc::Receiver<Publish>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Outbox {
                tx,
                dropped: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Queues a message without waiting; a full outbox drops it (see the module docs).
    pub fn push(&self, p: Publish) {
        match self.tx.try_send(p) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(p)) => {
                let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::warn!(
                        topic = %p.topic,
                        dropped = n,
                        "publish outbox full: desired state dropped (the resend scan repairs the device)"
                    );
                }
            }
            // The publisher stops only with the server.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Messages dropped so far because the outbox was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(i: u32) -> Publish {
        Publish {
            topic: format!("aq/devices/d{i}/desired"),
            payload: vec![0; 8],
        }
    }

    #[test]
    fn a_full_outbox_drops_and_counts_without_blocking() {
        let (outbox, mut rx) = Outbox::new(2);
        for i in 0..5 {
            outbox.push(message(i));
        }
        assert_eq!(outbox.dropped(), 3);
        // The first two stay, in order; the rest are gone.
        assert_eq!(rx.try_recv().unwrap().topic, "aq/devices/d0/desired");
        assert_eq!(rx.try_recv().unwrap().topic, "aq/devices/d1/desired");
        assert!(rx.try_recv().is_err());
        // Room again: taken.
        outbox.push(message(9));
        assert_eq!(rx.try_recv().unwrap().topic, "aq/devices/d9/desired");
        assert_eq!(outbox.dropped(), 3);
    }
}
