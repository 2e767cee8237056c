//! Registry behaviour: save, list, tag, remove, gc, export/import, unpack, and refusals.

use std::time::SystemTime;

use aq_pack::PackRef;
use aq_pack::archive;
use aq_store::{ErrorKind, Registry};

use crate::support::*;

fn r(s: &str) -> PackRef {
    s.parse().unwrap()
}

#[test]
fn save_list_tag_remove_gc() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    let v1 = bytes(500_000, 1);
    let mut v2 = v1.clone();
    v2[250_000..250_100].fill(7);
    save(&reg, "det", "1.0.0", &v1).unwrap();
    save(&reg, "det", "1.1.0", &v2).unwrap();
    let list = reg.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[1].tags, vec!["latest".to_string()]);
    assert_eq!(
        reg.get(&r("det")).unwrap().manifest().version.to_string(),
        "1.1.0"
    );

    let err = save(&reg, "det", "1.0.0", &v1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");

    reg.tag(&r("det:1.0.0"), "prod").unwrap();
    assert_eq!(
        reg.get(&r("det:prod"))
            .unwrap()
            .manifest()
            .version
            .to_string(),
        "1.0.0"
    );
    assert_eq!(
        reg.tag(&r("det:1.0.0"), "2.0.0").unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        reg.get(&r("det:nope")).unwrap_err().kind(),
        ErrorKind::NotFound
    );

    reg.remove(&r("det:1.1.0")).unwrap();
    assert_eq!(
        reg.get(&r("det")).unwrap().manifest().version.to_string(),
        "1.0.0",
        "latest moved back"
    );
    let gc = reg.gc().unwrap();
    assert!(gc.chunks_removed >= 1 && gc.chunks_removed <= 4, "{gc:?}");
    verify_all(&reg);
    reg.remove(&r("det:prod")).unwrap();
    let gc = reg.gc().unwrap();
    assert!(gc.chunks_removed > 3);
    assert!(reg.list().unwrap().is_empty());
}

#[test]
fn second_process_gets_busy() {
    let dir = tempfile::tempdir().unwrap();
    let _reg = Registry::open(dir.path()).unwrap();
    let err = Registry::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Busy, "{err}");
}

#[test]
fn export_import_unpack_round_trip() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let src = Registry::open(a.path()).unwrap();
    let data = bytes(1_000_000, 3);
    save(&src, "det", "2.0.0", &data).unwrap();
    let archive_bytes = src.export(&r("det:2.0.0"), Vec::new()).unwrap();

    let dst = Registry::open(b.path()).unwrap();
    let (verified, _) = archive::open(&archive_bytes[..])
        .unwrap()
        .verify(&policy(), SystemTime::now(), false)
        .unwrap();
    let report = dst.import(verified, None).unwrap();
    assert_eq!(report.chunks_new, report.chunks_total);
    verify_all(&dst);
    let out = b.path().join("out");
    dst.unpack(&r("det:2.0.0"), &out).unwrap();
    assert_eq!(std::fs::read(out.join("model.onnx")).unwrap(), data);
    // Unpacking again into a non-empty directory is refused and leaves it alone.
    let err = dst.unpack(&r("det:2.0.0"), &out).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert_eq!(std::fs::read(out.join("model.onnx")).unwrap(), data);

    // Importing the same pack again is a conflict and changes nothing.
    let before = dst.snapshot().unwrap();
    let (verified, _) = archive::open(&archive_bytes[..])
        .unwrap()
        .verify(&policy(), SystemTime::now(), false)
        .unwrap();
    assert_eq!(
        dst.import(verified, None).unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(dst.snapshot().unwrap(), before);
}

#[test]
fn tampered_chunk_in_the_store_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::open(dir.path()).unwrap();
    save(&reg, "det", "1.0.0", &bytes(300_000, 5)).unwrap();
    // Overwrite one stored chunk with another valid zstd frame.
    let blobs = dir.path().join("blobs");
    let file = std::fs::read_dir(&blobs)
        .unwrap()
        .flat_map(|shard| std::fs::read_dir(shard.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .next()
        .expect("at least one chunk file");
    std::fs::write(&file, zstd_frame(b"evil")).unwrap();
    let err = reg
        .verify(&r("det:1.0.0"), &policy(), SystemTime::now(), false)
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    let err = reg.export(&r("det:1.0.0"), Vec::new()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity, "{err}");
    std::fs::remove_file(&file).unwrap();
    let err = reg
        .verify(&r("det:1.0.0"), &policy(), SystemTime::now(), false)
        .unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

fn zstd_frame(data: &[u8]) -> Vec<u8> {
    aq_pack::chunk::compress(data, 1).unwrap()
}
