//! Kill -9 anywhere: `aq` and `aq-sync` killed with SIGKILL at random moments during
//! `aq pack import`, `aq pack gc`, `aq pack pull`, a push to `aq-sync` and `aq agent run`
//! applying a desired state. After every kill: every registry involved verifies pack by pack,
//! no pack committed before the kill is gone, the interrupted command works when run again,
//! and a restarted agent serves a model (the one it ran or the one it was moving to) from its
//! first answer on.
//!
//! Rounds per operation: `AQ_KILL_ROUNDS` (default 6, 30 kills in the default run). The long
//! run of 1,000 kills is `AQ_KILL_ROUNDS=200 cargo test -p aq-sync-server --test it kill_loop`.
//! The schedule comes from a seed that each test prints; `AQ_KILL_SEED` replays it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use aq_test_support::XorShift;
use serde_json::{Value, json};

use crate::support::{Agent, Server, aq_bin, fixture, noise, save, shared_key, wait_for};

fn rounds() -> usize {
    std::env::var("AQ_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// Random kill moments, replayable from the seed it prints.
struct Schedule {
    rng: XorShift,
    seed: u64,
    what: &'static str,
    /// Kills that landed before the command finished, and commands that finished first.
    interrupted: usize,
    finished: usize,
}

impl Schedule {
    fn new(what: &'static str) -> Schedule {
        let seed = std::env::var("AQ_KILL_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(XorShift::seed_from_clock);
        eprintln!("{what}: kill schedule seed {seed} (AQ_KILL_SEED replays it)");
        Schedule {
            rng: XorShift::new(seed),
            seed,
            what,
            interrupted: 0,
            finished: 0,
        }
    }

    /// A moment in `0..=window`.
    fn moment(&mut self, window: Duration) -> Duration {
        Duration::from_micros(self.rng.below(window.as_micros() as u64 + 1))
    }

    /// Runs `cmd`, SIGKILLs it after a random moment in `0..=window`, and returns how it
    /// ended (success when it finished before the kill).
    fn kill_during(&mut self, cmd: &mut Command, window: Duration) -> ExitStatus {
        let delay = self.moment(window);
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        self.count(status.success());
        status
    }

    fn count(&mut self, finished: bool) {
        if finished {
            self.finished += 1;
        } else {
            self.interrupted += 1;
        }
    }

    /// At least one kill must have landed mid-operation, or the test proved nothing.
    fn done(self) {
        eprintln!(
            "{}: {} kills mid-operation, {} after it finished (seed {})",
            self.what, self.interrupted, self.finished, self.seed
        );
        assert!(
            self.interrupted > 0,
            "{}: no kill landed during the operation (seed {})",
            self.what,
            self.seed
        );
    }
}

/// `aq --data-dir DATA ARGS` with no server configured.
fn aq(data: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(aq_bin());
    cmd.arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("AQ_DATA_DIR")
        .env_remove("AQ_SERVER")
        .env_remove("AQ_TOKEN");
    cmd
}

fn ok(mut cmd: impl std::borrow::BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn timed(cmd: impl std::borrow::BorrowMut<Command>) -> Duration {
    let start = Instant::now();
    ok(cmd);
    start.elapsed()
}

/// The ids (`NAME:VERSION`) of every pack in the registry at `data`.
fn list_packs(data: &Path) -> BTreeSet<String> {
    let list: Value =
        serde_json::from_str(&ok(&mut aq(data, &["--json", "pack", "list"]))).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// Verifies each of `ids` in the registry at `data`: the signature against `policy`, then
/// every chunk and file digest.
fn verify_packs<'a>(data: &Path, policy: &Path, ids: impl IntoIterator<Item = &'a String>) {
    for id in ids {
        ok(aq(data, &["pack", "verify", id, "--trust"]).arg(policy));
    }
}

/// Every pack in the registry at `data`, each verified. Returns their ids.
fn verify_every_pack(data: &Path, policy: &Path) -> BTreeSet<String> {
    let ids = list_packs(data);
    verify_packs(data, policy, &ids);
    ids
}

/// Registries that grow by a pack a round are verified whole every this many rounds (and at
/// the end); in between, the packs the round touched and one committed before it.
const FULL_CHECK_EVERY: usize = 20;

/// What holds after every kill of a command that adds `added`: the unrelated pack `keep:1.0.0`
/// is still there, and a command that reported success left its pack.
fn after_kill(ids: &BTreeSet<String>, succeeded: bool, added: &str, round: usize) {
    assert!(
        ids.contains("keep:1.0.0"),
        "round {round}: lost a committed pack: {ids:?}"
    );
    assert!(
        !succeeded || ids.contains(added),
        "round {round}: the command succeeded, {added} absent: {ids:?}"
    );
}

/// A pack of the sigmoid model and `mib` MiB of incompressible weights, so that storing or
/// moving it spans many chunk writes.
fn save_big(dir: &Path, data: &Path, key: &Path, name: &str, version: &str, mib: usize, seed: u64) {
    let weights = dir.join(format!("weights-{name}-{version}.bin"));
    std::fs::write(&weights, noise(mib << 20, seed)).unwrap();
    save(
        data,
        &fixture("sigmoid.onnx"),
        name,
        version,
        key,
        &["--file", weights.to_str().unwrap()],
    );
    std::fs::remove_file(&weights).unwrap();
}

/// A signing key trusted for every pack name in a fresh policy file; returns (key, policy).
fn local_key(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join("release.key");
    let policy = dir.join("policy.toml");
    ok(Command::new(aq_bin())
        .args(["key", "gen", "--out"])
        .arg(&key));
    ok(Command::new(aq_bin())
        .args(["key", "trust"])
        .arg(&key)
        .args(["--packs", "*", "--policy"])
        .arg(&policy));
    (key, policy)
}

#[test]
fn kill_loop_import() {
    let dir = tempfile::tempdir().unwrap();
    let (key, policy) = local_key(dir.path());
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    save_big(dir.path(), &src, &key, "big", "1.0.0", 12, 1);
    let archive = dir.path().join("big.aqpack");
    ok(aq(&src, &["pack", "export", "big", "-o"]).arg(&archive));
    save(&dst, &fixture("sigmoid.onnx"), "keep", "1.0.0", &key, &[]);
    let import = |cmd: &mut Command| {
        cmd.args(["pack", "import"])
            .arg(&archive)
            .arg("--trust")
            .arg(&policy);
    };
    let full = {
        let mut cmd = aq(&dst, &[]);
        import(&mut cmd);
        timed(&mut cmd)
    };
    ok(aq(&dst, &["pack", "rm", "big"]));
    ok(aq(&dst, &["pack", "gc"]));

    let mut schedule = Schedule::new("pack import");
    for round in 0..rounds() {
        let mut cmd = aq(&dst, &[]);
        import(&mut cmd);
        let status = schedule.kill_during(&mut cmd, full);
        let ids = verify_every_pack(&dst, &policy);
        after_kill(&ids, status.success(), "big:1.0.0", round);
        if !ids.contains("big:1.0.0") {
            // Run to the end, the import leaves the pack whole.
            let mut cmd = aq(&dst, &[]);
            import(&mut cmd);
            ok(&mut cmd);
            assert!(verify_every_pack(&dst, &policy).contains("big:1.0.0"));
        }
        // The next round starts clean.
        ok(aq(&dst, &["pack", "rm", "big"]));
        ok(aq(&dst, &["pack", "gc"]));
    }
    schedule.done();
    // The files come back byte for byte.
    let mut cmd = aq(&dst, &[]);
    import(&mut cmd);
    ok(&mut cmd);
    let out = dir.path().join("out");
    ok(aq(&dst, &["pack", "unpack", "big", "-o"]).arg(&out));
    assert_eq!(
        std::fs::read(out.join("sigmoid.onnx")).unwrap(),
        std::fs::read(fixture("sigmoid.onnx")).unwrap()
    );
}

#[test]
fn kill_loop_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (key, policy) = local_key(dir.path());
    let data = dir.path().join("reg");
    save_big(dir.path(), &data, &key, "keep", "1.0.0", 6, 2);
    let gc_json = |data: &Path| -> Value {
        serde_json::from_str(&ok(aq(data, &["--json", "pack", "gc"]))).unwrap()
    };
    // The window: one gc that frees a whole pack.
    save_big(dir.path(), &data, &key, "gone", "0.0.0", 24, 3);
    ok(aq(&data, &["pack", "rm", "gone"]));
    let full = timed(&mut aq(&data, &["pack", "gc"]));

    let mut schedule = Schedule::new("pack gc");
    for round in 0..rounds() {
        let version = format!("1.0.{round}");
        save_big(
            dir.path(),
            &data,
            &key,
            "gone",
            &version,
            24,
            10 + round as u64,
        );
        ok(aq(&data, &["pack", "rm", &format!("gone:{version}")]));
        schedule.kill_during(&mut aq(&data, &["pack", "gc"]), full);
        let ids = verify_every_pack(&data, &policy);
        assert_eq!(
            ids,
            BTreeSet::from(["keep:1.0.0".to_owned()]),
            "round {round}: a kept pack was lost or a removed one came back"
        );
        // Run again, gc finishes the job: a second run finds nothing left to free.
        gc_json(&data);
        let again = gc_json(&data);
        assert_eq!(
            (
                again["chunks_removed"].as_u64(),
                again["orphan_files_removed"].as_u64()
            ),
            (Some(0), Some(0)),
            "round {round}: {again}"
        );
    }
    schedule.done();
}

#[test]
fn kill_loop_pull() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let publisher = server.token("ci", "publisher");
    let (publ, device) = (dir.path().join("publisher"), dir.path().join("device"));
    let key = shared_key(dir.path(), &server, &[&device]);
    let policy = device.join("trust.toml");
    save_big(dir.path(), &publ, &key, "big", "1.0.0", 16, 4);
    save(&publ, &fixture("sigmoid.onnx"), "keep", "1.0.0", &key, &[]);
    for p in ["big", "keep"] {
        server.aq_json(&publ, &publisher, &["pack", "push", p]);
    }
    let pull =
        |reference: &str| server.aq_command(&device, &publisher, &["pack", "pull", reference]);
    ok(&mut pull("keep:1.0.0"));
    let full = timed(&mut pull("big:1.0.0"));
    ok(aq(&device, &["pack", "rm", "big"]));
    ok(aq(&device, &["pack", "gc"]));

    let mut schedule = Schedule::new("pack pull");
    for round in 0..rounds() {
        let status = schedule.kill_during(&mut pull("big:1.0.0"), full);
        let ids = verify_every_pack(&device, &policy);
        after_kill(&ids, status.success(), "big:1.0.0", round);
        // Pulled again, it resumes and completes.
        ok(&mut pull("big:1.0.0"));
        assert!(verify_every_pack(&device, &policy).contains("big:1.0.0"));
        ok(aq(&device, &["pack", "rm", "big"]));
        ok(aq(&device, &["pack", "gc"]));
    }
    schedule.done();
}

#[test]
fn kill_loop_server_during_push() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("srv"));
    let publisher = server.token("ci", "publisher");
    let publ = dir.path().join("publisher");
    let key = shared_key(dir.path(), &server, &[]);
    let policy = server.data.join("trust.toml");
    let registry = server.data.join("registry");
    save(&publ, &fixture("sigmoid.onnx"), "keep", "1.0.0", &key, &[]);
    server.aq_json(&publ, &publisher, &["pack", "push", "keep"]);
    save_big(dir.path(), &publ, &key, "big", "0.0.0", 8, 5);
    let push = |server: &Server, reference: &str| {
        let mut cmd = server.aq_command(&publ, &publisher, &["pack", "push", reference]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    };
    let full = timed(&mut push(&server, "big:0.0.0"));

    let mut schedule = Schedule::new("aq-sync during a push");
    let mut committed = BTreeSet::from(["keep:1.0.0".to_owned(), "big:0.0.0".to_owned()]);
    let mut last = "big:0.0.0".to_owned();
    for round in 0..rounds() {
        let version = format!("1.0.{round}");
        save_big(
            dir.path(),
            &publ,
            &key,
            "big",
            &version,
            8,
            20 + round as u64,
        );
        let reference = format!("big:{version}");
        let mut client = push(&server, &reference).spawn().unwrap();
        std::thread::sleep(schedule.moment(full));
        server.kill();
        let pushed = client.wait().unwrap().success();
        schedule.count(pushed);
        // The server's registry, read while it is down: no pack committed before is gone,
        // and they verify (the new one, the one before, an old one; every pack each
        // FULL_CHECK_EVERY rounds).
        let ids = list_packs(&registry);
        if round % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1 {
            verify_packs(&registry, &policy, &ids);
        } else {
            let touched = [&reference, &last, &"keep:1.0.0".to_owned()];
            verify_packs(
                &registry,
                &policy,
                touched.into_iter().filter(|id| ids.contains(*id)),
            );
        }
        assert!(
            committed.is_subset(&ids),
            "round {round}: lost {:?}",
            committed.difference(&ids).collect::<Vec<_>>()
        );
        if pushed {
            assert!(
                ids.contains(&reference),
                "round {round}: push succeeded, pack absent"
            );
        }
        server.restart();
        // Pushed again, it resumes and completes.
        ok(&mut push(&server, &reference));
        committed.insert(reference.clone());
        last = reference;
    }
    schedule.done();
    server.kill();
    assert_eq!(verify_every_pack(&registry, &policy), committed);
}

/// A sigmoid input: [3, 4, 5] f32.
fn sigmoid_input() -> Value {
    json!({ "inputs": { "x": { "shape": [3, 4, 5], "data": vec![0.25f32; 60] } } })
}

#[test]
fn kill_loop_agent_applying_a_desired_state() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("srv"));
    let publisher = server.token("ci", "publisher");
    let enroller = server.token("factory", "enroller");
    let (publ, device) = (dir.path().join("publisher"), dir.path().join("device"));
    let key = shared_key(dir.path(), &server, &[]);
    Agent::enroll(&server, &device, &enroller, &["site=lab"]);
    let policy = device.join("trust.toml");
    let mut agent = Agent::start(&device);
    let mut seed = 30;
    let mut save = |version: &str| {
        seed += 1;
        save_big(dir.path(), &publ, &key, "sig", version, 2, seed);
    };
    let deploy = |version: &str| -> String {
        let v = server.aq_json(
            &publ,
            &publisher,
            &[
                "deploy",
                &format!("sig:{version}"),
                "--selector",
                "site=lab",
                "--steps",
                "100",
            ],
        );
        v["rollout"]["id"].as_str().unwrap().to_owned()
    };
    // A rollout is live until its device reports; the next one waits for that.
    let completed = |id: &str| {
        wait_for(&format!("rollout {id} to complete"), 60, || {
            let r = server.call(
                "GET",
                &format!("/v1/rollouts/{id}"),
                Some(&publisher),
                None,
                vec![],
            );
            (r.json()["phase"] == "completed").then_some(())
        })
    };
    let serving = |agent: &Agent, version: &str, secs: u64| {
        wait_for(&format!("the device to serve sig {version}"), secs, || {
            (agent.serving("sig", &sigmoid_input()).as_deref() == Some(version)).then_some(())
        })
    };
    // The window: from a deploy (push and rollout) to the device serving its version.
    save("1.0.0");
    let first = deploy("1.0.0");
    serving(&agent, "1.0.0", 60);
    completed(&first);
    save("1.1.0");
    let start = Instant::now();
    let second = deploy("1.1.0");
    serving(&agent, "1.1.0", 60);
    let full = start.elapsed();
    completed(&second);

    let mut schedule = Schedule::new("aq agent run applying a desired state");
    let (mut previous, mut current) = ("1.0.0".to_owned(), "1.1.0".to_owned());
    for round in 0..rounds() {
        let next = format!("2.0.{round}");
        save(&next);
        // The kill lands anywhere from the deploy on: before the desired state arrives,
        // while the pack is fetched and loaded, or after.
        let kill_at = Instant::now() + schedule.moment(full);
        let rollout = deploy(&next);
        std::thread::sleep(kill_at.saturating_duration_since(Instant::now()));
        let before_kill = agent.serving("sig", &sigmoid_input());
        agent.kill();
        schedule.count(before_kill.as_deref() == Some(next.as_str()));
        // The agent's registry holds up: what it ran and what it moved to verify (every
        // pack, each FULL_CHECK_EVERY rounds). Versions before those are removed, as a
        // device's housekeeping would, so the registry does not grow with the loop.
        let ids = list_packs(&device);
        let keep: BTreeSet<String> = [&previous, &current, &next]
            .iter()
            .map(|v| format!("sig:{v}"))
            .collect();
        assert!(
            ids.contains(&format!("sig:{current}")),
            "round {round}: {ids:?}"
        );
        if round % FULL_CHECK_EVERY == FULL_CHECK_EVERY - 1 {
            verify_packs(&device, &policy, &ids);
        } else {
            verify_packs(&device, &policy, ids.intersection(&keep));
        }
        for old in ids.difference(&keep) {
            ok(aq(&device, &["pack", "rm", old]));
        }
        agent = Agent::start(&device);
        // Its first answer comes from a model: the one it ran or the one it moved to.
        let first = agent.serving("sig", &sigmoid_input());
        assert!(
            first.as_deref() == Some(current.as_str()) || first.as_deref() == Some(next.as_str()),
            "round {round}: the restarted agent serves {first:?}, not {current} or {next}"
        );
        serving(&agent, &next, 60);
        completed(&rollout);
        previous = std::mem::replace(&mut current, next);
    }
    schedule.done();

    // Its active pack gone from its registry while it was down (a disk restored from an older
    // image, say), the agent comes back serving the previous one, and its state says why.
    agent.kill();
    ok(&mut aq(&device, &["pack", "rm", &format!("sig:{current}")]));
    let agent = Agent::start(&device);
    assert_eq!(
        agent.serving("sig", &sigmoid_input()).as_deref(),
        Some(previous.as_str())
    );
    let state: Value =
        serde_json::from_slice(&std::fs::read(device.join("agent-state.json")).unwrap()).unwrap();
    assert_eq!(state["active"]["id"], format!("sig:{previous}"), "{state}");
    assert!(
        state["last_error"]
            .as_str()
            .unwrap()
            .contains(&format!("sig:{current}")),
        "{state}"
    );
}
