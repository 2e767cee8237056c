//! Fuzz the chunk batch frame decoder (uploads and downloads between `aq` and `aq-sync`).
//! Model check: an accepted frame re-encodes to exactly its input bytes, every entry's stored
//! bytes fit zstd's bound for its declared size, and digests are unique.
#![no_main]

use std::collections::HashSet;

use aq_pack::chunk::max_compressed_size;
use aq_sync_proto::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = frame::decode(data) {
        assert_eq!(frame::encode(&entries), data);
        let mut seen = HashSet::new();
        for e in &entries {
            assert!(e.stored.len() as u64 <= max_compressed_size(e.size));
            assert!(seen.insert(e.digest));
        }
    }
});
