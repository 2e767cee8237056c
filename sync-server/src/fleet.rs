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

    /// Starts a rollout of `pack` to the devices matching the selector.
    pub fn create_rollout(
        &self,
        req: &RolloutRequest,
        pack: PackTarget,
        now: SystemTime,
    ) -> Result<(RolloutStatus, Vec<Publish>), FleetError> {
        if req.steps.is_empty()
            || req.steps.windows(2).any(|w| w[0] >= w[1])
            || req.steps.first().is_some_and(|s| *s == 0)
            || req.steps.last() != Some(&100)
        {
            return Err(FleetError::Invalid(format!(
                "steps {:?} must increase from above 0 and end at 100",
                req.steps
            )));
        }
        if !(0.0..1.0).contains(&req.max_failure) {
            return Err(FleetError::Invalid(format!(
                "max_failure {} must be a fraction in [0, 1)",
                req.max_failure
            )));
        }
        let txn = self.db.begin_write()?;
        let counter = {
            let mut counters = txn.open_table(COUNTERS)?;
            let next = counters.get("rollout")?.map_or(0, |v| v.value()) + 1;
            counters.insert("rollout", next)?;
            next
        };
        let id = format!("r{counter}");
        let busy = self.devices_in_live_rollouts(&txn)?;
        let mut table = txn.open_table(DEVICES)?;
        let mut devices = Vec::new();
        {
            for entry in table.iter()? {
                let (k, v) = entry?;
                let d: DeviceRecord = decode(k.value(), v.value())?;
                if req
                    .selector
                    .iter()
                    .all(|(key, value)| d.labels.get(key) == Some(value))
                {
                    if let Some(other) = busy.get(&d.device) {
                        return Err(FleetError::Conflict(format!(
                            "device {} is in rollout {other}, which is still live; finish, pause and roll back, or wait for it",
                            d.device
                        )));
                    }
                    devices.push(d.device);
                }
            }
        }
        if devices.is_empty() {
            return Err(FleetError::Invalid(format!(
                "the selector {:?} matches no enrolled device",
                req.selector
            )));
        }
        devices.sort_by_key(|d| {
            blake3::hash(format!("{id}/{d}").as_bytes())
                .to_hex()
                .to_string()
        });
        let mut rollout = RolloutRecord {
            id,
            pack,
            selector: req.selector.clone(),
            steps: req.steps.clone(),
            max_failure: req.max_failure,
            soak_s: req.soak_s,
            phase: RolloutPhase::Running,
            reason: None,
            step: 0,
            devices,
            assigned: BTreeMap::new(),
            rolled_back: BTreeSet::new(),
            created_at: rfc3339(now),
            updated_at: rfc3339(now),
            step_started: unix(now),
        };
        let publish = self.assign_step(&mut table, &mut rollout, now)?;
        Self::put_rollout(&txn, &rollout)?;
        let status = self.status_in(&table, &rollout)?;
        drop(table);
        txn.commit()?;
        Ok((status, publish))
    }

    fn devices_in_live_rollouts(
        &self,
        txn: &WriteTransaction,
    ) -> Result<BTreeMap<String, String>, FleetError> {
        let mut out = BTreeMap::new();
        for r in Self::rollouts_in(txn)? {
            if matches!(r.phase, RolloutPhase::Running | RolloutPhase::Paused) {
                for d in &r.devices {
                    out.insert(d.clone(), r.id.clone());
                }
            }
        }
        Ok(out)
    }

    fn rollouts_in(txn: &WriteTransaction) -> Result<Vec<RolloutRecord>, FleetError> {
        let table = txn.open_table(ROLLOUTS)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// How many devices the step at `index` covers.
    fn target_count(total: usize, percent: u32) -> usize {
        (total * percent as usize).div_ceil(100).clamp(1, total)
    }

    /// Points the devices the current step adds at the rollout's pack.
    fn assign_step(
        &self,
        devices: &mut Devices<'_>,
        rollout: &mut RolloutRecord,
        now: SystemTime,
    ) -> Result<Vec<Publish>, FleetError> {
        let count = Self::target_count(rollout.devices.len(), rollout.steps[rollout.step]);
        let mut publish = Vec::new();
        let newly: Vec<String> = rollout.devices[..count]
            .iter()
            .filter(|id| !rollout.assigned.contains_key(*id))
            .cloned()
            .collect();
        for id in newly {
            let mut device = Self::get_device(devices, &id)?;
            let previous = device.desired.as_ref().and_then(|d| d.pack.clone());
            publish.push(self.set_desired(
                &mut device,
                Some(rollout.pack.clone()),
                Some(rollout.id.clone()),
                now,
            ));
            let seq = device.desired.as_ref().map_or(0, |d| d.seq);
            rollout
                .assigned
                .insert(id.clone(), Assignment { seq, previous });
            Self::put_device(devices, &device)?;
        }
        rollout.step_started = unix(now);
        rollout.updated_at = rfc3339(now);
        Ok(publish)
    }

    /// Sends every assigned device back to what it ran before the rollout.
    fn roll_back(
        &self,
        devices: &mut Devices<'_>,
        rollout: &mut RolloutRecord,
        phase: RolloutPhase,
        reason: String,
        now: SystemTime,
    ) -> Result<Vec<Publish>, FleetError> {
        let mut publish = Vec::new();
        for (id, assignment) in rollout.assigned.clone() {
            if rollout.rolled_back.contains(&id) {
                continue;
            }
            let mut device = Self::get_device(devices, &id)?;
            publish.push(self.set_desired(
                &mut device,
                assignment.previous.clone(),
                Some(rollout.id.clone()),
                now,
            ));
            Self::put_device(devices, &device)?;
            rollout.rolled_back.insert(id);
        }
        rollout.phase = phase;
        rollout.reason = Some(reason);
        rollout.updated_at = rfc3339(now);
        Ok(publish)
    }

    fn outcome(
        devices: &impl ReadableTable<&'static str, &'static [u8]>,
        rollout: &RolloutRecord,
        id: &str,
    ) -> Result<DeviceOutcome, FleetError> {
        if rollout.rolled_back.contains(id) {
            return Ok(DeviceOutcome::RolledBack);
        }
        let Some(assignment) = rollout.assigned.get(id) else {
            return Ok(DeviceOutcome::Waiting);
        };
        let device = Self::get_device(devices, id)?;
        let Some(report) = &device.reported else {
            return Ok(DeviceOutcome::Pending);
        };
        if report.desired_seq < assignment.seq {
            return Ok(DeviceOutcome::Pending);
        }
        Ok(match report.phase {
            Phase::Failed => DeviceOutcome::Failed,
            Phase::Applied
                if report.active.as_ref().map(|p| &p.digest) == Some(&rollout.pack.digest) =>
            {
                DeviceOutcome::Succeeded
            }
            _ => DeviceOutcome::Pending,
        })
    }

    /// Applies the rollout rules: abort past the failure threshold, advance after the soak
    /// time, complete after the last step.
    fn evaluate_in(
        &self,
        txn: &WriteTransaction,
        now: SystemTime,
    ) -> Result<Vec<Publish>, FleetError> {
        let mut publish = Vec::new();
        let rollouts = Self::rollouts_in(txn)?;
        if rollouts.iter().all(|r| r.phase != RolloutPhase::Running) {
            return Ok(publish);
        }
        let mut devices = txn.open_table(DEVICES)?;
        for mut rollout in rollouts {
            if rollout.phase != RolloutPhase::Running {
                continue;
            }
            let before = rollout.phase;
            let (before_step, assigned) = (rollout.step, rollout.assigned.len());
            let mut failed = 0;
            let mut succeeded = 0;
            for id in rollout.assigned.keys() {
                match Self::outcome(&devices, &rollout, id)? {
                    DeviceOutcome::Failed => failed += 1,
                    DeviceOutcome::Succeeded => succeeded += 1,
                    _ => {}
                }
            }
            if failed as f64 > rollout.max_failure * rollout.devices.len() as f64 {
                let reason = format!(
                    "{failed} of {} devices failed to run {} (max_failure {})",
                    rollout.devices.len(),
                    rollout.pack.id,
                    rollout.max_failure
                );
                tracing::warn!(rollout = %rollout.id, %reason, "rollout aborted");
                publish.extend(self.roll_back(
                    &mut devices,
                    &mut rollout,
                    RolloutPhase::Aborted,
                    reason,
                    now,
                )?);
            } else if succeeded == assigned {
                if rollout.step + 1 == rollout.steps.len() {
                    rollout.phase = RolloutPhase::Completed;
                    rollout.updated_at = rfc3339(now);
                    tracing::info!(rollout = %rollout.id, "rollout completed");
                } else if let Some(soak) = rollout.soak_s
                    && unix(now) >= rollout.step_started + soak
                {
                    rollout.step += 1;
                    publish.extend(self.assign_step(&mut devices, &mut rollout, now)?);
                    tracing::info!(rollout = %rollout.id, step = rollout.step, "rollout advanced after soak");
                }
            }
            if rollout.phase != before || rollout.step != before_step {
                Self::put_rollout(txn, &rollout)?;
            }
        }
        Ok(publish)
    }

    /// Re-evaluates every running rollout (the periodic tick: soak times pass without reports).
    pub fn tick(&self, now: SystemTime) -> Result<Vec<Publish>, FleetError> {
        let txn = self.db.begin_write()?;
        let publish = self.evaluate_in(&txn, now)?;
        txn.commit()?;
        Ok(publish)
    }

    fn load_rollout(txn: &WriteTransaction, id: &str) -> Result<RolloutRecord, FleetError> {
        let table = txn.open_table(ROLLOUTS)?;
        let bytes = table
            .get(id)?
            .ok_or_else(|| FleetError::UnknownRollout(id.to_owned()))?;
        decode(id, bytes.value())
    }

    /// A user's command on a rollout.
    pub fn command(
        &self,
        id: &str,
        command: Command,
        now: SystemTime,
    ) -> Result<(RolloutStatus, Vec<Publish>), FleetError> {
        let txn = self.db.begin_write()?;
        let mut rollout = Self::load_rollout(&txn, id)?;
        // A completed rollout can still be rolled back; nothing else acts on a finished one.
        let allowed = match rollout.phase {
            RolloutPhase::Running | RolloutPhase::Paused => true,
            RolloutPhase::Completed => command == Command::Rollback,
            RolloutPhase::Aborted | RolloutPhase::RolledBack => false,
        };
        if !allowed {
            return Err(FleetError::Conflict(format!(
                "rollout {id} is {:?}; it does not take {command:?}",
                rollout.phase
            )));
        }
        let mut publish = Vec::new();
        let mut devices = txn.open_table(DEVICES)?;
        match command {
            Command::Advance => {
                if rollout.step + 1 >= rollout.steps.len() {
                    return Err(FleetError::Conflict(format!(
                        "rollout {id} is at its last step ({}%)",
                        rollout.steps[rollout.step]
                    )));
                }
                rollout.step += 1;
                rollout.phase = RolloutPhase::Running;
                publish = self.assign_step(&mut devices, &mut rollout, now)?;
            }
            Command::Pause => {
                rollout.phase = RolloutPhase::Paused;
                rollout.updated_at = rfc3339(now);
            }
            Command::Resume => {
                rollout.phase = RolloutPhase::Running;
                rollout.updated_at = rfc3339(now);
            }
            Command::Rollback => {
                publish = self.roll_back(
                    &mut devices,
                    &mut rollout,
                    RolloutPhase::RolledBack,
                    "rolled back by a user".into(),
                    now,
                )?;
            }
        }
        drop(devices);
        Self::put_rollout(&txn, &rollout)?;
        publish.extend(self.evaluate_in(&txn, now)?);
        let rollout = Self::load_rollout(&txn, id)?;
        let status = self.status_in(&txn.open_table(DEVICES)?, &rollout)?;
        txn.commit()?;
        Ok((status, publish))
    }

    fn status_in(
        &self,
        table: &impl ReadableTable<&'static str, &'static [u8]>,
        r: &RolloutRecord,
    ) -> Result<RolloutStatus, FleetError> {
        let mut devices = BTreeMap::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for id in &r.devices {
            let outcome = Self::outcome(table, r, id)?;
            let name = serde_json::to_value(outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *counts.entry(name).or_default() += 1;
            devices.insert(id.clone(), outcome);
        }
        Ok(RolloutStatus {
            id: r.id.clone(),
            pack: r.pack.clone(),
            selector: r.selector.clone(),
            steps: r.steps.clone(),
            step: r.step,
            max_failure: r.max_failure,
            soak_s: r.soak_s,
            phase: r.phase,
            reason: r.reason.clone(),
            created_at: r.created_at.clone(),
            updated_at: r.updated_at.clone(),
            devices,
            counts,
        })
    }

    pub fn rollout(&self, id: &str) -> Result<RolloutStatus, FleetError> {
        let txn = self.db.begin_read()?;
        let bytes = txn
            .open_table(ROLLOUTS)?
            .get(id)?
            .ok_or_else(|| FleetError::UnknownRollout(id.to_owned()))?;
        let r: RolloutRecord = decode(id, bytes.value())?;
        self.status_in(&txn.open_table(DEVICES)?, &r)
    }

    pub fn rollouts(&self) -> Result<Vec<RolloutStatus>, FleetError> {
        let txn = self.db.begin_read()?;
        let devices = txn.open_table(DEVICES)?;
        let mut out = Vec::new();
        for entry in txn.open_table(ROLLOUTS)?.iter()? {
            let (k, v) = entry?;
            let r: RolloutRecord = decode(k.value(), v.value())?;
            out.push(self.status_in(&devices, &r)?);
        }
        out.sort_by_key(|s| s.id.trim_start_matches('r').parse::<u64>().unwrap_or(0));
        Ok(out)
    }

    /// How long the tick waits between evaluations.
    pub const TICK: Duration = Duration::from_secs(1);
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
mod tests {
    use super::*;

    struct World {
        _dir: tempfile::TempDir,
        db: Database,
        server: SecretKey,
        devices: Vec<(String, SecretKey)>,
    }

    fn world(n: usize) -> World {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("fleet.redb")).unwrap();
        let server = SecretKey::from_seed([1; 32]);
        Fleet::init(&db).unwrap();
        let mut devices = Vec::new();
        {
            let fleet = Fleet::new(&db, &server, "aq").unwrap();
            for i in 0..n {
                let key = SecretKey::from_seed([i as u8 + 10; 32]);
                let labels = BTreeMap::from([(
                    "site".to_owned(),
                    if i % 2 == 0 { "a" } else { "b" }.to_owned(),
                )]);
                let nonce = fleet.enroll_challenge(SystemTime::now()).unwrap().nonce;
                let req = EnrollRequest::sign(&key, labels, None, nonce);
                let (info, _token) = fleet.enroll(&req, SystemTime::now()).unwrap();
                devices.push((info.device, key));
            }
        }
        World {
            _dir: dir,
            db,
            server,
            devices,
        }
    }

    fn pack(v: &str) -> PackTarget {
        PackTarget {
            id: format!("m:{v}"),
            digest: format!("blake3:{v}"),
        }
    }

    fn report(
        w: &World,
        i: usize,
        seq: u64,
        phase: Phase,
        active: Option<PackTarget>,
    ) -> (String, Vec<u8>) {
        let fleet = Fleet::new(&w.db, &w.server, "aq").unwrap();
        let desired_seq = fleet
            .device(&w.devices[i].0)
            .unwrap()
            .desired
            .map_or(0, |d| d.seq);
        let r = ReportedState {
            format_version: 1,
            device: w.devices[i].0.clone(),
            report_seq: seq,
            desired_seq,
            phase,
            active,
            previous: None,
            error: None,
            health: Default::default(),
            labels: Default::default(),
            capabilities: None,
            sent_at: "now".into(),
        };
        (
            w.devices[i].0.clone(),
            fleet::seal(Kind::Reported, &r, &w.devices[i].1),
        )
    }

    fn request(steps: &[u32], soak: Option<u64>) -> RolloutRequest {
        RolloutRequest {
            pack: "m:2".into(),
            selector: BTreeMap::new(),
            steps: steps.to_vec(),
            max_failure: 0.2,
            soak_s: soak,
            force: false,
        }
    }

    #[test]
    fn an_enrollment_nonce_works_once_and_not_after_it_expires() {
        let w = world(1);
        let fleet = Fleet::new(&w.db, &w.server, "aq").unwrap();
        let key = &w.devices[0].1;
        let now = SystemTime::now();
        let labels = BTreeMap::from([("site".to_owned(), "c".to_owned())]);
        let late = fleet.enroll_challenge(now).unwrap().nonce;
        let req = EnrollRequest::sign(key, labels.clone(), None, late);
        let after = now + Duration::from_secs(ENROLL_CHALLENGE_SECONDS + 1);
        assert!(matches!(
            fleet.enroll(&req, after),
            Err(FleetError::Refused(_))
        ));
        // Spent by the refusal: not usable in time either.
        assert!(matches!(
            fleet.enroll(&req, now),
            Err(FleetError::Refused(_))
        ));
        let fresh = fleet.enroll_challenge(now).unwrap().nonce;
        let req = EnrollRequest::sign(key, labels, None, fresh);
        let (info, token) = fleet.enroll(&req, now).unwrap();
        assert_eq!(info.labels["site"], "c");
        assert!(token.starts_with(crate::tokens::TOKEN_PREFIX));
        assert!(matches!(
            fleet.enroll(&req, now),
            Err(FleetError::Refused(_))
        ));
    }

    #[test]
    fn steps_widen_on_success_and_soak_and_complete() {
        let w = world(10);
        let fleet = Fleet::new(&w.db, &w.server, "aq").unwrap();
        let now = SystemTime::now();
        let (status, publish) = fleet
            .create_rollout(&request(&[10, 50, 100], Some(0)), pack("2"), now)
            .unwrap();
        assert_eq!(
            (
                status.counts["pending"],
                status.counts["waiting"],
                publish.len()
            ),
            (1, 9, 1)
        );
        // Each published state opens with the server key for its device.
        let canary = status
            .devices
            .iter()
            .find(|(_, o)| **o == DeviceOutcome::Pending)
            .unwrap()
            .0
            .clone();
        let desired =
            fleet::open_desired(&publish[0].payload, &w.server.public_key(), &canary).unwrap();
        assert_eq!(desired.pack, Some(pack("2")));
        let i = w.devices.iter().position(|(d, _)| *d == canary).unwrap();
        let refused = fleet
            .reports(&[report(&w, i, 1, Phase::Applied, Some(pack("2")))], now)
            .unwrap();
        assert!(refused.is_empty());
        let publish = fleet.tick(now).unwrap();
        // Soak 0: the step is done, so the next one (50%) starts in the same evaluation.
        assert_eq!(publish.len(), 4);
        let status = fleet.rollout(&status.id).unwrap();
        assert_eq!(
            (
                status.step,
                status.counts["succeeded"],
                status.counts["pending"]
            ),
            (1, 1, 4)
        );
        let mut batch = Vec::new();
        for (i, (d, _)) in w.devices.iter().enumerate() {
            if status.devices[d] == DeviceOutcome::Pending {
                batch.push(report(&w, i, 1, Phase::Applied, Some(pack("2"))));
            }
        }
        fleet.reports(&batch, now).unwrap();
        let publish = fleet.tick(now).unwrap();
        assert_eq!(publish.len(), 5);
        let mut batch = Vec::new();
        for i in 0..10 {
            batch.push(report(&w, i, 2, Phase::Applied, Some(pack("2"))));
        }
        fleet.reports(&batch, now).unwrap();
        fleet.tick(now).unwrap();
        let status = fleet.rollout(&status.id).unwrap();
        assert_eq!(
            (status.phase, status.counts["succeeded"]),
            (RolloutPhase::Completed, 10)
        );
    }

    #[test]
    fn failures_past_the_threshold_abort_and_roll_back() {
        let w = world(10);
        let fleet = Fleet::new(&w.db, &w.server, "aq").unwrap();
        let now = SystemTime::now();
        let (first, _) = fleet
            .create_rollout(&request(&[100], None), pack("1"), now)
            .unwrap();
        let batch: Vec<_> = (0..10)
            .map(|i| report(&w, i, 1, Phase::Applied, Some(pack("1"))))
            .collect();
        fleet.reports(&batch, now).unwrap();
        fleet.tick(now).unwrap();
        assert_eq!(
            fleet.rollout(&first.id).unwrap().phase,
            RolloutPhase::Completed
        );
        let (status, _) = fleet
            .create_rollout(&request(&[50, 100], None), pack("2"), now)
            .unwrap();
        let assigned: Vec<usize> = (0..10)
            .filter(|i| status.devices[&w.devices[*i].0] == DeviceOutcome::Pending)
            .collect();
        assert_eq!(assigned.len(), 5);
        // Two failures of ten devices is 20%: not above max_failure 0.2. A third aborts.
        let fail = |i: usize, seq| report(&w, i, seq, Phase::Failed, Some(pack("1")));
        fleet
            .reports(&[fail(assigned[0], 2), fail(assigned[1], 2)], now)
            .unwrap();
        assert!(fleet.tick(now).unwrap().is_empty());
        assert_eq!(
            fleet.rollout(&status.id).unwrap().phase,
            RolloutPhase::Running
        );
        fleet.reports(&[fail(assigned[2], 2)], now).unwrap();
        let publish = fleet.tick(now).unwrap();
        let status = fleet.rollout(&status.id).unwrap();
        assert_eq!(status.phase, RolloutPhase::Aborted);
        assert_eq!(publish.len(), 5, "every assigned device goes back");
        for p in &publish {
            let device = p.topic.split('/').nth(2).unwrap();
            let d = fleet::open_desired(&p.payload, &w.server.public_key(), device).unwrap();
            assert_eq!(d.pack, Some(pack("1")));
        }
        assert!(matches!(
            fleet.command(&status.id, Command::Advance, now),
            Err(FleetError::Conflict(_))
        ));
    }

    #[test]
    fn stale_forged_and_misaddressed_reports_change_nothing() {
        let w = world(2);
        let fleet = Fleet::new(&w.db, &w.server, "aq").unwrap();
        let now = SystemTime::now();
        fleet
            .reports(&[report(&w, 0, 5, Phase::Applied, Some(pack("9")))], now)
            .unwrap();
        // Older report_seq: ignored.
        fleet
            .reports(&[report(&w, 0, 4, Phase::Failed, None)], now)
            .unwrap();
        let d = fleet.device(&w.devices[0].0).unwrap();
        assert_eq!(d.reported.unwrap().active, Some(pack("9")));
        // Signed by another device's key, or published on another device's topic: refused.
        let (_, theirs) = report(&w, 1, 9, Phase::Failed, None);
        let refused = fleet
            .reports(
                &[
                    (w.devices[0].0.clone(), theirs.clone()),
                    ("d-nobody".into(), theirs),
                ],
                now,
            )
            .unwrap();
        assert_eq!(refused.len(), 2);
        let d = fleet.device(&w.devices[0].0).unwrap();
        assert_eq!(d.reported.unwrap().report_seq, 5);
    }

    #[test]
    fn lagging_live_devices_get_their_desired_state_again() {
        let w = world(3);
        let fleet = Fleet::new(&w.db, &w.server, "aq").unwrap();
        let now = SystemTime::now();
        // Devices 0 and 1 report (live); device 2 never does (offline: the retained message
        // waits for it).
        fleet
            .reports(
                &[
                    report(&w, 0, 1, Phase::Applied, None),
                    report(&w, 1, 1, Phase::Applied, None),
                ],
                now,
            )
            .unwrap();
        fleet
            .create_rollout(&request(&[100], None), pack("2"), now)
            .unwrap();
        // Device 1 caught up; device 0 still answers seq 0.
        fleet
            .reports(&[report(&w, 1, 2, Phase::Applied, Some(pack("2")))], now)
            .unwrap();
        let second = Duration::from_secs(1);
        assert!(
            fleet
                .unacknowledged(now, 15 * second, 120 * second)
                .unwrap()
                .is_empty(),
            "too soon"
        );
        let later = now + 20 * second;
        let again = fleet
            .unacknowledged(later, 15 * second, 120 * second)
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].topic, fleet::desired_topic("aq", &w.devices[0].0));
        // Long silent: no longer live, no resend.
        let much_later = now + 600 * second;
        assert!(
            fleet
                .unacknowledged(much_later, 15 * second, 120 * second)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn bad_rollouts_are_refused() {
        let w = world(3);
        let fleet = Fleet::new(&w.db, &w.server, "aq").unwrap();
        let now = SystemTime::now();
        for steps in [vec![], vec![50], vec![0, 100], vec![60, 40, 100]] {
            assert!(
                matches!(
                    fleet.create_rollout(&request(&steps, None), pack("2"), now),
                    Err(FleetError::Invalid(_))
                ),
                "{steps:?}"
            );
        }
        let mut nobody = request(&[100], None);
        nobody.selector.insert("site".into(), "mars".into());
        assert!(matches!(
            fleet.create_rollout(&nobody, pack("2"), now),
            Err(FleetError::Invalid(_))
        ));
        fleet
            .create_rollout(&request(&[50, 100], None), pack("2"), now)
            .unwrap();
        // The same devices cannot be in two live rollouts.
        assert!(matches!(
            fleet.create_rollout(&request(&[100], None), pack("3"), now),
            Err(FleetError::Conflict(_))
        ));
        assert!(matches!(
            fleet.enroll(
                &EnrollRequest::sign(
                    &w.devices[0].1,
                    BTreeMap::from([("bad label".into(), "x".into())]),
                    None,
                    fleet.enroll_challenge(now).unwrap().nonce,
                ),
                now
            ),
            Err(FleetError::Invalid(_))
        ));
    }
}
