//! Fuzz the fleet message envelope (desired and reported state over MQTT). Model check: no
//! input verifies under a key that did not sign it, and whatever decodes as a desired state is
//! for the device asked about.
#![no_main]

use aq_pack::keys::SecretKey;
use aq_sync_proto::fleet::{self, Kind, ReportedState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = SecretKey::from_seed([5; 32]).public_key();
    if let Ok(d) = fleet::open_desired(data, &key, "d-1") {
        // Only a signature by the seed-5 key gets here; the fuzzer cannot forge one.
        assert_eq!(d.device, "d-1");
        panic!("forged desired state accepted: {d:?}");
    }
    let _ = fleet::open::<ReportedState>(Kind::Reported, data, &key);
});
