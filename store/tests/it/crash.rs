//! Interrupt a change at every storage operation and check the registry reopens in the old or
//! the new state, never in between.

use std::time::SystemTime;

use aq_pack::archive;
use aq_store::{FsBlobStore, Registry};

use crate::support::*;

/// Process death: every write and sync after the N-th fails, what was written stays.
#[test]
fn import_interrupted_at_every_io_step_leaves_old_or_new_state() {
    let v1 = bytes(400_000, 1);
    let mut v2 = v1.clone();
    v2[100_000..300_000]
        .iter_mut()
        .for_each(|b| *b = b.wrapping_add(1));
    let archive_v2 = {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::open(tmp.path()).unwrap();
        save(&reg, "det", "2.0.0", &v2).unwrap();
        reg.export(&"det:2.0.0".parse().unwrap(), Vec::new())
            .unwrap()
    };
    let mut fail_at = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let old = {
            let reg = Registry::open(dir.path()).unwrap();
            save(&reg, "det", "1.0.0", &v1).unwrap();
            reg.snapshot().unwrap()
        };
        let faults = Faults::after(fail_at);
        let result = (|| {
            let db = redb::Builder::new().create_with_backend(FailingFileBackend::open(
                &Registry::db_path(dir.path()),
                faults.clone(),
            ))?;
            let blobs = FailingBlobs {
                inner: FsBlobStore::open(&dir.path().join("blobs")).unwrap(),
                faults: faults.clone(),
            };
            let reg = Registry::with_parts(dir.path(), db, Box::new(blobs))?;
            let (verified, _) =
                archive::open(&archive_v2[..])?.verify(&policy(), SystemTime::now(), false)?;
            reg.import(verified, None)
        })();
        let reg = Registry::open(dir.path()).unwrap();
        let now = reg.snapshot().unwrap();
        let has_new = now.packs.contains_key("det:2.0.0");
        if result.is_ok() {
            assert!(
                has_new,
                "import reported success but the pack is absent (fail_at {fail_at})"
            );
        }
        if has_new {
            assert_eq!(now.packs.len(), 2);
            assert_eq!(
                now.tags.get("det:latest").map(String::as_str),
                Some("2.0.0")
            );
        } else {
            assert_eq!(now, old, "partial state after failure at op {fail_at}");
        }
        verify_all(&reg);
        // The registry is fully usable afterwards: gc, then the import succeeds.
        reg.gc().unwrap();
        verify_all(&reg);
        if !has_new {
            let (verified, _) = archive::open(&archive_v2[..])
                .unwrap()
                .verify(&policy(), SystemTime::now(), false)
                .unwrap();
            reg.import(verified, None).unwrap();
            verify_all(&reg);
        }
        if !faults.fired() {
            eprintln!("import: interrupted at each of {fail_at} storage operations");
            assert!(
                fail_at > 10,
                "the import should take more than a few I/O steps"
            );
            break;
        }
        fail_at += 1;
    }
}

/// Power loss: at the N-th operation the machine stops; only what was synced survives.
#[test]
fn power_loss_at_every_step_of_save_remove_and_gc() {
    let v1 = bytes(300_000, 11);
    let v2 = bytes(300_000, 12);
    for op in ["save", "remove", "gc"] {
        let mut fail_at = 0;
        loop {
            let dir = tempfile::tempdir().unwrap();
            let disk = std::sync::Arc::new(std::sync::Mutex::new(Disk::default()));
            let old = {
                let reg = open_mem(dir.path(), &disk, Faults::after(i64::MAX)).unwrap();
                save(&reg, "det", "1.0.0", &v1).unwrap();
                if op != "save" {
                    save(&reg, "det", "2.0.0", &v2).unwrap();
                }
                if op == "gc" {
                    reg.remove(&"det:1.0.0".parse().unwrap()).unwrap();
                }
                reg.snapshot().unwrap()
            };
            let faults = Faults::after(fail_at);
            let result = open_mem(dir.path(), &disk, faults.clone()).and_then(|reg| match op {
                "save" => save(&reg, "det", "2.0.0", &v2),
                "remove" => reg.remove(&"det:2.0.0".parse().unwrap()).map(|_| ()),
                _ => reg.gc().map(|_| ()),
            });
            disk.lock().unwrap().power_loss();
            let reg = open_mem(dir.path(), &disk, Faults::after(i64::MAX)).unwrap();
            let now = reg.snapshot().unwrap();
            let changed = now != old;
            if result.is_ok() && op != "gc" {
                assert!(
                    changed,
                    "{op} reported success but did not persist (fail_at {fail_at})"
                );
            }
            match op {
                "save" if changed => {
                    assert!(now.packs.contains_key("det:2.0.0") && now.packs.len() == 2)
                }
                "remove" if changed => {
                    assert!(!now.packs.contains_key("det:2.0.0") && now.packs.len() == 1)
                }
                _ => assert_eq!(now, old, "{op}: partial state at op {fail_at}"),
            }
            verify_all(&reg);
            reg.gc().unwrap();
            verify_all(&reg);
            if !faults.fired() {
                eprintln!("{op}: interrupted at each of {fail_at} storage operations");
                assert!(fail_at > 3, "{op} should take several storage operations");
                break;
            }
            fail_at += 1;
        }
    }
}
