//! JSON Schemas for the wire forms of types `aq-pack` owns (digests, public keys), so the REST
//! bodies' schemas can be derived from the Rust types with `schemars` (feature `schema`).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

/// The wire form of a content digest: `blake3:` and 64 lowercase hex digits.
pub const DIGEST_PATTERN: &str = "^blake3:[0-9a-f]{64}$";

/// The wire form of a public key: `ed25519:` and base64 of its 32 bytes.
pub const PUBLIC_KEY_PATTERN: &str = "^ed25519:[A-Za-z0-9+/]{43}=$";

/// Stands in for [`aq_pack::Digest`] in derived schemas (`#[schemars(with = "DigestText")]`).
pub struct DigestText;

impl JsonSchema for DigestText {
    fn schema_name() -> Cow<'static, str> {
        "Digest".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DIGEST_PATTERN,
            "description": "blake3 of the content: `blake3:` and 64 lowercase hex digits",
        })
    }
}

/// Stands in for [`aq_pack::PublicKey`] in derived schemas.
pub struct PublicKeyText;

impl JsonSchema for PublicKeyText {
    fn schema_name() -> Cow<'static, str> {
        "PublicKey".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PUBLIC_KEY_PATTERN,
            "description": "an ed25519 public key: `ed25519:` and base64 of 32 bytes",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The patterns are anchored literals over one character class; checking a real value
    /// against them by hand keeps a regex engine out of the dependencies.
    fn matches_class(s: &str, prefix: &str, len: usize, ok: impl Fn(char) -> bool) -> bool {
        s.strip_prefix(prefix)
            .is_some_and(|rest| rest.chars().count() == len && rest.chars().all(ok))
    }

    #[test]
    fn patterns_describe_the_wire_forms() {
        assert_eq!(DIGEST_PATTERN, "^blake3:[0-9a-f]{64}$");
        let digest = aq_pack::Digest::of(b"x").to_string();
        assert!(matches_class(
            &digest,
            "blake3:",
            64,
            |c| matches!(c, '0'..='9' | 'a'..='f')
        ));
        let key = aq_pack::SecretKey::from_seed([7; 32])
            .public_key()
            .to_string();
        assert_eq!(PUBLIC_KEY_PATTERN, "^ed25519:[A-Za-z0-9+/]{43}=$");
        let body = key.strip_suffix('=').unwrap_or_default();
        assert!(matches_class(body, "ed25519:", 43, |c| c
            .is_ascii_alphanumeric()
            || c == '+'
            || c == '/'));
        assert!(key.ends_with('='));
    }
}
