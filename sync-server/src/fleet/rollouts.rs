//! Staged rollouts: creating one, assigning each step's devices, judging outcomes (advance,
//! complete, abort and roll back), the tick, user commands and status.

use super::*;

impl<'a> Fleet<'a> {
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
