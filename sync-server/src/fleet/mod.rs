//! The fleet: enrolled devices, their desired and reported state, and staged rollouts, in the
//! server's `fleet.redb`. Every change is one redb transaction and returns the desired-state
//! messages it produced; the caller publishes them (retained) once the change is committed, so
//! what devices see never runs ahead of what the server recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use aq_pack::keys::{PublicKey, SecretKey};
use aq_sync_proto::fleet::{
    self, DesiredState, DeviceInfo, DeviceOutcome, ENROLL_CHALLENGE_SECONDS, EnrollChallenge,
    EnrollRequest, Kind, PackTarget, Phase, ReportedState, RolloutPhase, RolloutRequest,
    RolloutStatus,
};
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

mod rollouts;

/// device id -> device record (JSON).
const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
/// rollout id -> rollout record (JSON).
const ROLLOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("rollouts");
/// counters (`rollout`).
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Outstanding enrollment nonces (hex) -> the unix second they expire; each is taken once.
const NONCES: TableDefinition<&str, u64> = TableDefinition::new("enroll_nonces");
/// Most enrollment challenges outstanding at once (expired ones are dropped first).
pub const MAX_OUTSTANDING_CHALLENGES: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetError {
    #[error("fleet database error")]
    Database(#[from] redb::Error),
    #[error("fleet record {0} is corrupt")]
    Corrupt(String),
    #[error("no device {0}")]
    UnknownDevice(String),
    #[error("no rollout {0}")]
    UnknownRollout(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    /// An enrollment without a valid proof of key possession (or a spent or expired nonce).
    #[error("{0}")]
    Refused(String),
    /// Too many enrollment challenges outstanding.
    #[error("{0}")]
    Busy(String),
    #[error("failed to make the device's token")]
    Token(#[from] crate::tokens::TokenError),
}

crate::redb_errors_into!(FleetError);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceRecord {
    device: String,
    name: String,
    public_key: PublicKey,
    labels: BTreeMap<String, String>,
    enrolled_at: String,
    desired: Option<DesiredState>,
    reported: Option<ReportedState>,
    last_seen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutRecord {
    id: String,
    pack: PackTarget,
    selector: BTreeMap<String, String>,
    steps: Vec<u32>,
    max_failure: f64,
    soak_s: Option<u64>,
    phase: RolloutPhase,
    reason: Option<String>,
    step: usize,
    /// Every selected device, in rollout order.
    devices: Vec<String>,
    /// Devices told to run the pack: the desired seq that told them, and what they ran before.
    assigned: BTreeMap<String, Assignment>,
    rolled_back: BTreeSet<String>,
    created_at: String,
    updated_at: String,
    /// Unix seconds when the current step began.
    step_started: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assignment {
    seq: u64,
    previous: Option<PackTarget>,
}

/// The devices table, open in a write transaction.
type Devices<'t> = redb::Table<'t, &'static str, &'static [u8]>;

/// A retained message to publish: topic and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// The fleet over one database, signing desired states with the server key.
pub struct Fleet<'a> {
    db: &'a Database,
    key: &'a SecretKey,
    prefix: &'a str,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, FleetError> {
    serde_json::from_slice(bytes).map_err(|e| FleetError::Corrupt(format!("{key}: {e}")))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FleetError> {
    serde_json::to_vec(value).map_err(|e| FleetError::Corrupt(e.to_string()))
}

/// The device id of a public key: `d-` and its key id.
pub fn device_id(key: &PublicKey) -> String {
    format!("d-{}", key.key_id())
}

fn valid_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
}

impl<'a> Fleet<'a> {
    /// Creates the tables (once, at start); [`Fleet::new`] never writes.
    pub fn init(db: &Database) -> Result<(), FleetError> {
        let txn = db.begin_write()?;
        txn.open_table(DEVICES)?;
        txn.open_table(ROLLOUTS)?;
        txn.open_table(COUNTERS)?;
        txn.open_table(NONCES)?;
        txn.commit()?;
        Ok(())
    }

    pub fn new(db: &'a Database, key: &'a SecretKey, prefix: &'a str) -> Result<Self, FleetError> {
        Ok(Fleet { db, key, prefix })
    }

    // Every operation opens the devices table once and passes it down: opening and closing a
    // table per record cost about a millisecond each in a large write transaction.
    fn get_device(
        devices: &impl ReadableTable<&'static str, &'static [u8]>,
        id: &str,
    ) -> Result<DeviceRecord, FleetError> {
        let bytes = devices
            .get(id)?
            .ok_or_else(|| FleetError::UnknownDevice(id.to_owned()))?;
        decode(id, bytes.value())
    }

    fn put_device(devices: &mut Devices<'_>, d: &DeviceRecord) -> Result<(), FleetError> {
        devices.insert(d.device.as_str(), encode(d)?.as_slice())?;
        Ok(())
    }

    fn put_rollout(txn: &WriteTransaction, r: &RolloutRecord) -> Result<(), FleetError> {
        txn.open_table(ROLLOUTS)?
            .insert(r.id.as_str(), encode(r)?.as_slice())?;
        Ok(())
    }

    /// Sets a device's desired state (next seq) and returns the message to publish.
    fn set_desired(
        &self,
        device: &mut DeviceRecord,
        pack: Option<PackTarget>,
        rollout: Option<String>,
        now: SystemTime,
    ) -> Publish {
        let seq = device.desired.as_ref().map_or(0, |d| d.seq) + 1;
        let desired = DesiredState {
            format_version: fleet::FLEET_FORMAT_VERSION,
            device: device.device.clone(),
            seq,
            pack,
            rollout,
            issued_at: rfc3339(now),
        };
        let publish = Publish {
            topic: fleet::desired_topic(self.prefix, &device.device),
            payload: fleet::seal(Kind::Desired, &desired, self.key),
        };
        device.desired = Some(desired);
        publish
    }

    /// Registers a device (or re-registers the same key with new labels).
    /// A one-time nonce for [`Fleet::enroll`], valid for [`ENROLL_CHALLENGE_SECONDS`].
    pub fn enroll_challenge(&self, now: SystemTime) -> Result<EnrollChallenge, FleetError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw)
            .map_err(|e| FleetError::Corrupt(format!("failed to draw a nonce: {e}")))?;
        let nonce: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let expires = unix(now) + ENROLL_CHALLENGE_SECONDS;
        let txn = self.db.begin_write()?;
        {
            let mut nonces = txn.open_table(NONCES)?;
            if nonces.len()? >= MAX_OUTSTANDING_CHALLENGES {
                let now = unix(now);
                nonces.retain(|_, expiry| expiry > now)?;
                if nonces.len()? >= MAX_OUTSTANDING_CHALLENGES {
                    return Err(FleetError::Busy(format!(
                        "{MAX_OUTSTANDING_CHALLENGES} enrollment challenges are outstanding; try again later"
                    )));
                }
            }
            nonces.insert(nonce.as_str(), expires)?;
        }
        txn.commit()?;
        Ok(EnrollChallenge {
            nonce,
            expires_at: rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(expires)),
        })
    }

    /// Enrolls a device (or changes a known device's labels and name) and makes its token, in
    /// one transaction: the request must carry an unspent, unexpired nonce from
    /// [`Fleet::enroll_challenge`] and the device key's signature over it and every field.
    /// Refused requests change nothing (the nonce stays spendable only if it was never valid).
    pub fn enroll(
        &self,
        req: &EnrollRequest,
        now: SystemTime,
    ) -> Result<(DeviceInfo, String), FleetError> {
        for (k, v) in &req.labels {
            if !valid_label(k) || !valid_label(v) {
                return Err(FleetError::Invalid(format!(
                    "invalid label {k}={v}: use 1 to 64 letters, digits, '.', '_', '-', '/'"
                )));
            }
        }
        let id = device_id(&req.public_key);
        let txn = self.db.begin_write()?;
        {
            // The nonce is spent whatever follows, so a refused proof cannot be retried on it.
            let mut nonces = txn.open_table(NONCES)?;
            let expiry = nonces.remove(req.nonce.as_str())?.map(|v| v.value());
            match expiry {
                None => {
                    return Err(FleetError::Refused(
                        "unknown or already used enrollment nonce: ask for a new challenge".into(),
                    ));
                }
                Some(expiry) if expiry <= unix(now) => {
                    drop(nonces);
                    txn.commit()?;
                    return Err(FleetError::Refused(
                        "the enrollment challenge expired: ask for a new one".into(),
                    ));
                }
                Some(_) => {}
            }
            if !req.proof_holds() {
                drop(nonces);
                txn.commit()?;
                return Err(FleetError::Refused(format!(
                    "the proof does not verify: the request must be signed by the device key {} over the nonce",
                    req.public_key.key_id()
                )));
            }
        }
        let mut devices = txn.open_table(DEVICES)?;
        let record = match Self::get_device(&devices, &id) {
            Ok(mut existing) => {
                existing.labels = req.labels.clone();
                if let Some(n) = &req.name {
                    existing.name = n.clone();
                }
                existing
            }
            Err(FleetError::UnknownDevice(_)) => DeviceRecord {
                device: id.clone(),
                name: req.name.clone().unwrap_or_else(|| id.clone()),
                public_key: req.public_key,
                labels: req.labels.clone(),
                enrolled_at: rfc3339(now),
                desired: None,
                reported: None,
                last_seen: None,
            },
            Err(e) => return Err(e),
        };
        Self::put_device(&mut devices, &record)?;
        drop(devices);
        let (_, token) = crate::tokens::create_in(&txn, &id, aq_sync_proto::Role::Device, now)?;
        txn.commit()?;
        Ok((info(record), token))
    }

    pub fn devices(&self) -> Result<Vec<DeviceInfo>, FleetError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(info(decode(k.value(), v.value())?));
        }
        Ok(out)
    }

    pub fn device(&self, id: &str) -> Result<DeviceInfo, FleetError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let bytes = table
            .get(id)?
            .ok_or_else(|| FleetError::UnknownDevice(id.to_owned()))?;
        Ok(info(decode(id, bytes.value())?))
    }

    /// Every device's current desired state, to publish again (a broker that lost its
    /// retained messages, or a server restart).
    pub fn all_desired(&self) -> Result<Vec<Publish>, FleetError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let d: DeviceRecord = decode(k.value(), v.value())?;
            if let Some(desired) = &d.desired {
                out.push(Publish {
                    topic: fleet::desired_topic(self.prefix, &d.device),
                    payload: fleet::seal(Kind::Desired, desired, self.key),
                });
            }
        }
        Ok(out)
    }

    /// Desired states that live devices have not caught up with: the device reported within
    /// `live` but its last report answers an older seq, and the state was issued at least
    /// `after` ago. They are published again: a broker may drop a message under load (the
    /// built-in one lost about a tenth of a 10,000-device rollout without this), and devices
    /// ignore what they already applied.
    pub fn unacknowledged(
        &self,
        now: SystemTime,
        after: Duration,
        live: Duration,
    ) -> Result<Vec<Publish>, FleetError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(DEVICES)?;
        let older_than = |stamp: &str, age: Duration| {
            humantime::parse_rfc3339(stamp)
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|elapsed| elapsed >= age)
        };
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            let d: DeviceRecord = decode(k.value(), v.value())?;
            let (Some(desired), Some(report), Some(seen)) = (&d.desired, &d.reported, &d.last_seen)
            else {
                continue;
            };
            if report.desired_seq < desired.seq
                && older_than(&desired.issued_at, after)
                && !older_than(seen, live)
            {
                out.push(Publish {
                    topic: fleet::desired_topic(self.prefix, &d.device),
                    payload: fleet::seal(Kind::Desired, desired, self.key),
                });
            }
        }
        Ok(out)
    }

    /// Takes a batch of reports (device id, payload) in one transaction: each is checked
    /// against its device's enrolled key and dropped if not newer than the last one taken.
    /// Returns the refused reports with why. The rollout rules run on [`Fleet::tick`].
    pub fn reports(
        &self,
        batch: &[(String, Vec<u8>)],
        now: SystemTime,
    ) -> Result<Vec<(String, FleetError)>, FleetError> {
        let txn = self.db.begin_write()?;
        let mut refused = Vec::new();
        {
            let mut devices = txn.open_table(DEVICES)?;
            for (device, payload) in batch {
                if let Err(e) = Self::take_report(&mut devices, device, payload, now) {
                    refused.push((device.clone(), e));
                }
            }
        }
        txn.commit()?;
        Ok(refused)
    }

    fn take_report(
        devices: &mut Devices<'_>,
        device: &str,
        payload: &[u8],
        now: SystemTime,
    ) -> Result<(), FleetError> {
        let mut record = Self::get_device(devices, device)?;
        let report: ReportedState = fleet::open(Kind::Reported, payload, &record.public_key)
            .map_err(|e| FleetError::Invalid(format!("report from {device}: {e}")))?;
        if report.device != device {
            return Err(FleetError::Invalid(format!(
                "report on {device}'s topic names device {}",
                report.device
            )));
        }
        if record
            .reported
            .as_ref()
            .is_some_and(|r| r.report_seq >= report.report_seq)
        {
            return Ok(());
        }
        record.reported = Some(report);
        record.last_seen = Some(rfc3339(now));
        Self::put_device(devices, &record)
    }
}

/// What a user can tell a rollout to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Advance,
    Pause,
    Resume,
    Rollback,
}

fn info(d: DeviceRecord) -> DeviceInfo {
    DeviceInfo {
        device: d.device,
        name: d.name,
        labels: d.labels,
        enrolled_at: d.enrolled_at,
        desired: d.desired,
        reported: d.reported,
        last_seen: d.last_seen,
    }
}

#[cfg(test)]
mod tests;
