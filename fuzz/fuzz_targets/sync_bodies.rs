//! Fuzz the JSON request bodies `aq-sync` takes (tokens, promote, push, chunk lists,
//! enrollment, rollouts), decoded as the server decodes them, then what the server does next
//! with each that is pure: the pushed manifest and signature parsed, the enrollment proof
//! checked. The first byte picks the body type. Model check: a body that decodes re-encodes to
//! JSON that decodes to the same value; no decoder panics.
#![no_main]

use aq_sync_proto::api::{DigestList, PackUpload, PromoteRequest, TokenRequest};
use aq_sync_proto::fleet::{EnrollRequest, RolloutRequest};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Decodes `body` as `T`; a decoded value survives an encode and a decode unchanged (by
/// `same`).
fn round_trip_by<T: DeserializeOwned + Serialize + std::fmt::Debug>(
    body: &[u8],
    same: impl Fn(&T, &T) -> bool,
) -> Option<T> {
    let value: T = serde_json::from_slice(body).ok()?;
    let text = serde_json::to_vec(&value).expect("a decoded body encodes");
    let again: T = serde_json::from_slice(&text).expect("an encoded body decodes");
    assert!(
        same(&again, &value),
        "decode, encode, decode changed {value:?} into {again:?}"
    );
    Some(value)
}

fn round_trip<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    body: &[u8],
) -> Option<T> {
    round_trip_by(body, |a: &T, b: &T| a == b)
}

fuzz_target!(|data: &[u8]| {
    let Some((kind, body)) = data.split_first() else {
        return;
    };
    match kind % 6 {
        0 => {
            round_trip::<TokenRequest>(body);
        }
        1 => {
            round_trip::<PromoteRequest>(body);
        }
        2 => {
            if let Some(upload) = round_trip::<PackUpload>(body) {
                let _ = aq_pack::SignedManifest::parse(
                    upload.manifest.as_bytes(),
                    upload.signature.as_deref().map(str::as_bytes),
                );
            }
        }
        3 => {
            round_trip::<DigestList>(body);
        }
        4 => {
            if let Some(request) = round_trip::<EnrollRequest>(body) {
                let _ = request.proof_holds();
            }
        }
        _ => {
            // serde_json's float parser may land one ulp off the shortest form it writes
            // (without its float_roundtrip feature): max_failure is compared to within that.
            round_trip_by::<RolloutRequest>(body, |a, b| {
                let close =
                    (a.max_failure - b.max_failure).abs() <= f64::EPSILON * b.max_failure.abs();
                close
                    && RolloutRequest {
                        max_failure: b.max_failure,
                        ..a.clone()
                    } == *b
            });
        }
    }
});
