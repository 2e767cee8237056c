//! Fuzz the `.aqpack` reader. Model check: whatever the reader accepts, the writer reproduces
//! byte for byte from what was read (the format has one encoding per pack), so a reader that
//! accepts a non-canonical or partially-checked stream fails the assertion.
#![no_main]

use aq_pack::archive::{self, ArchiveWriter};
use aq_pack::TrustPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(pending) = archive::open(data) else { return };
    // Unsigned packs are allowed so the fuzzer can reach chunk parsing without forging keys.
    let Ok((mut verified, _)) = pending.verify(&TrustPolicy::empty(), std::time::SystemTime::now(), true) else {
        return;
    };
    let mut chunks = Vec::new();
    loop {
        match verified.next_chunk() {
            Ok(Some(c)) => chunks.push(c),
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let mut writer = ArchiveWriter::new(Vec::new(), verified.signed()).unwrap();
    for c in &chunks {
        writer.write_chunk(&c.digest, &c.compressed).unwrap();
    }
    let rewritten = writer.finish().unwrap();
    assert_eq!(rewritten, data, "accepted archive is not the canonical encoding of its contents");
});
