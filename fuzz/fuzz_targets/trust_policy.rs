//! Fuzz the trust policy parser. Model check: an accepted policy survives `to_toml` and a
//! second parse unchanged.
#![no_main]

use aq_pack::TrustPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(policy) = TrustPolicy::parse(text) {
        assert_eq!(TrustPolicy::parse(&policy.to_toml()).unwrap(), policy);
    }
});
