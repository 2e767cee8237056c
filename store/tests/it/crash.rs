//! Interrupt a change at every storage operation and check the registry reopens in the old or
//! the new state, never in between.

use std::time::SystemTime;

use aq_pack::archive;
use aq_store::{FsBlobStore, LooseChunk, Registry};

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

/// A push as the server receives it (chunk frames, then the manifest with its tags),
/// interrupted at every storage operation: every chunk the registry admits to having reads
/// back verified, the pack and its tags are there together or not at all, and a retry that
/// sends everything again completes.
#[test]
fn loose_chunk_upload_interrupted_at_every_io_step_resumes() {
    let data = bytes(600_000, 5);
    let (signed, chunks) = make_pack("up", "1.0.0", &data);
    let digests: Vec<_> = chunks.iter().map(|(d, _, _)| *d).collect();
    let loose: Vec<LooseChunk<'_>> = chunks
        .iter()
        .map(|(digest, size, c)| LooseChunk {
            digest: *digest,
            size: *size,
            compressed: c,
        })
        .collect();
    let (first, second) = loose.split_at(loose.len() / 2);
    let tags = vec!["prod".to_owned(), "stable".to_owned()];
    let mut fail_at = 0;
    loop {
        let dir = tempfile::tempdir().unwrap();
        drop(Registry::open(dir.path()).unwrap());
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
            reg.put_chunks(first, SystemTime::now())?;
            reg.put_chunks(second, SystemTime::now())?;
            reg.begin_pack(signed.clone())?.with_tags(&tags)?.commit()
        })();
        let reg = Registry::open(dir.path()).unwrap();
        let snapshot = reg.snapshot().unwrap();
        let present = snapshot.packs.contains_key("up:1.0.0");
        for tag in ["up:prod", "up:stable"] {
            assert_eq!(
                snapshot.tags.get(tag).map(String::as_str),
                present.then_some("1.0.0"),
                "{tag} without its pack, or the pack without it (fail_at {fail_at})"
            );
        }
        // A commit may report failure after it reached the disk, so only success is conclusive.
        if result.is_ok() {
            assert!(present, "reported success, pack absent (fail_at {fail_at})");
        }
        let missing = reg.missing_chunks(&digests).unwrap();
        for (d, size, _) in &chunks {
            if !missing.contains(d) {
                reg.read_chunk(d, *size)
                    .unwrap_or_else(|e| panic!("admitted chunk {d} is bad at {fail_at}: {e}"));
            }
        }
        // Within the grace period gc keeps what arrived; the retry sends only what is missing.
        reg.gc_with_grace(std::time::Duration::from_secs(3600), SystemTime::now())
            .unwrap();
        assert_eq!(reg.missing_chunks(&digests).unwrap(), missing);
        if !present {
            let resend: Vec<LooseChunk<'_>> = loose
                .iter()
                .filter(|c| missing.contains(&c.digest))
                .copied()
                .collect();
            let report = reg.put_chunks(&resend, SystemTime::now()).unwrap();
            assert_eq!(report.chunks_new, missing.len());
            reg.begin_pack(signed.clone())
                .unwrap()
                .with_tags(&tags)
                .unwrap()
                .commit()
                .unwrap();
        }
        verify_all(&reg);
        if !faults.fired() {
            eprintln!("loose upload: interrupted at each of {fail_at} storage operations");
            assert!(fail_at > 5);
            break;
        }
        fail_at += 1;
    }
}

#[test]
fn loose_chunks_are_verified_kept_for_the_grace_period_and_then_collected() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let (signed, chunks) = make_pack("lc", "1.0.0", &bytes(300_000, 9));
    let (d, size, c) = &chunks[0];
    // A chunk whose bytes are not its digest's is refused, and leaves nothing behind.
    let lie = LooseChunk {
        digest: chunks[1].0,
        size: *size,
        compressed: c,
    };
    assert!(reg.put_chunks(&[lie], SystemTime::now()).is_err());
    assert_eq!(
        reg.missing_chunks(&[chunks[1].0]).unwrap(),
        vec![chunks[1].0]
    );
    let good = LooseChunk {
        digest: *d,
        size: *size,
        compressed: c,
    };
    let report = reg.put_chunks(&[good, good], SystemTime::now()).unwrap();
    assert_eq!((report.chunks_new, report.chunks_present), (1, 1));
    let hour = std::time::Duration::from_secs(3600);
    let kept = reg.gc_with_grace(hour, SystemTime::now()).unwrap();
    assert_eq!((kept.loose_kept, kept.chunks_removed), (1, 0));
    let later = SystemTime::now() + 2 * hour;
    let collected = reg.gc_with_grace(hour, later).unwrap();
    assert_eq!(collected.chunks_removed, 1);
    assert_eq!(reg.missing_chunks(&[*d]).unwrap(), vec![*d]);
    // Committed chunks are no longer loose: gc past the grace period keeps them.
    let all: Vec<LooseChunk<'_>> = chunks
        .iter()
        .map(|(digest, size, c)| LooseChunk {
            digest: *digest,
            size: *size,
            compressed: c,
        })
        .collect();
    reg.put_chunks(&all, SystemTime::now()).unwrap();
    reg.begin_pack(signed).unwrap().commit().unwrap();
    let after = reg.gc_with_grace(hour, later).unwrap();
    assert_eq!((after.chunks_removed, after.loose_kept), (0, 0));
    verify_all(&reg);
}
