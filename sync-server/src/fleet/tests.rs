//! The fleet against real redb files: enrollment, reports, rollouts and their edge cases.

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
