//! Fuzz the manifest parser. Model check: an accepted manifest validates, and its canonical
//! encoding is exactly the input (the one-encoding law that signatures rely on).
#![no_main]

use aq_pack::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::parse(data) {
        m.validate().expect("parse returned a manifest that does not validate");
        assert_eq!(m.to_canonical_bytes().unwrap(), data);
        assert_eq!(Manifest::parse(&m.to_canonical_bytes().unwrap()).unwrap(), m);
    }
});
