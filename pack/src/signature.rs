//! Detached ed25519 signatures over canonical manifest bytes.
//!
//! The signed message is a fixed context string followed by the canonical manifest bytes, so a
//! signature made for a manifest can never be replayed as a signature over something else.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::keys::{PublicKey, SecretKey};
use crate::manifest::{Manifest, ManifestError};

/// Domain-separation prefix of every signed message.
pub const SIGNING_CONTEXT: &[u8] = b"aquilia-modelpack-manifest-v1\0";
/// Version of the signature envelope format.
pub const SIGNATURE_FORMAT_VERSION: u32 = 1;
/// Largest envelope a reader accepts.
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// Errors from reading a signature envelope.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    #[error("signature envelope is larger than {MAX_SIGNATURE_BYTES} bytes")]
    TooLarge,
    #[error("signature envelope is not valid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("signature envelope is invalid: {0}")]
    Invalid(String),
}

/// The on-disk/on-wire signature: who signed, and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureEnvelope {
    pub format_version: u32,
    pub algorithm: String,
    pub key_id: String,
    pub public_key: PublicKey,
    /// base64 of the 64 signature bytes.
    pub signature: String,
}

impl SignatureEnvelope {
    /// Signs canonical manifest bytes.
    pub fn sign(manifest_bytes: &[u8], key: &SecretKey) -> SignatureEnvelope {
        let public_key = key.public_key();
        let signature = key.sign(&signed_message(manifest_bytes));
        SignatureEnvelope {
            format_version: SIGNATURE_FORMAT_VERSION,
            algorithm: "ed25519".into(),
            key_id: public_key.key_id(),
            public_key,
            signature: STANDARD.encode(signature),
        }
    }

    /// Parses and checks the envelope's own consistency (not the signature itself).
    pub fn parse(bytes: &[u8]) -> Result<SignatureEnvelope, SignatureError> {
        if bytes.len() > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::TooLarge);
        }
        let env: SignatureEnvelope = serde_json::from_slice(bytes)?;
        if env.format_version != SIGNATURE_FORMAT_VERSION {
            return Err(SignatureError::Invalid(format!(
                "format_version {} is not supported",
                env.format_version
            )));
        }
        if env.algorithm != "ed25519" {
            return Err(SignatureError::Invalid(format!(
                "algorithm {:?} is not supported",
                env.algorithm
            )));
        }
        if env.key_id != env.public_key.key_id() {
            return Err(SignatureError::Invalid(
                "key_id does not match public_key".into(),
            ));
        }
        env.signature_bytes()?;
        // One encoding per envelope, as for manifests: archives re-encode byte for byte.
        if env.to_bytes() != bytes {
            return Err(SignatureError::Invalid(
                "envelope is not in canonical form".into(),
            ));
        }
        Ok(env)
    }

    /// Serialised form (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of strings to JSON cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn signature_bytes(&self) -> Result<[u8; 64], SignatureError> {
        let raw = STANDARD
            .decode(&self.signature)
            .map_err(|_| SignatureError::Invalid("signature is not base64".into()))?;
        raw.try_into()
            .map_err(|_| SignatureError::Invalid("signature is not 64 bytes".into()))
    }

    /// True when this envelope is a valid signature by its key over `manifest_bytes`.
    pub fn verifies(&self, manifest_bytes: &[u8]) -> bool {
        match self.signature_bytes() {
            Ok(sig) => self
                .public_key
                .verify(&signed_message(manifest_bytes), &sig),
            Err(_) => false,
        }
    }
}

fn signed_message(manifest_bytes: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNING_CONTEXT.len() + manifest_bytes.len());
    msg.extend_from_slice(SIGNING_CONTEXT);
    msg.extend_from_slice(manifest_bytes);
    msg
}

/// A parsed manifest together with its exact bytes and (optional) signature.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signature: Option<SignatureEnvelope>,
}

impl SignedManifest {
    /// Parses manifest bytes and an optional signature envelope. Does not check the signature:
    /// that is [`crate::TrustPolicy::verify`]'s job.
    pub fn parse(
        manifest_bytes: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<SignedManifest, crate::trust::TrustError> {
        let manifest = Manifest::parse(manifest_bytes)?;
        let signature = signature.map(SignatureEnvelope::parse).transpose()?;
        Ok(SignedManifest {
            manifest,
            manifest_bytes: manifest_bytes.to_vec(),
            signature,
        })
    }

    /// Canonicalises and (optionally) signs a freshly built manifest.
    pub fn seal(
        manifest: Manifest,
        key: Option<&SecretKey>,
    ) -> Result<SignedManifest, ManifestError> {
        manifest.validate()?;
        let manifest_bytes = manifest.to_canonical_bytes()?;
        let signature = key.map(|k| SignatureEnvelope::sign(&manifest_bytes, k));
        Ok(SignedManifest {
            manifest,
            manifest_bytes,
            signature,
        })
    }

    /// The pack digest (blake3 of the canonical manifest bytes).
    pub fn digest(&self) -> crate::Digest {
        crate::Digest::of(&self.manifest_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample;

    #[test]
    fn sign_and_verify() {
        let key = SecretKey::from_seed([3; 32]);
        let signed = SignedManifest::seal(sample(), Some(&key)).unwrap();
        let env = signed.signature.clone().unwrap();
        assert!(env.verifies(&signed.manifest_bytes));
        let parsed = SignatureEnvelope::parse(&env.to_bytes()).unwrap();
        assert_eq!(parsed, env);
        let mut tampered = signed.manifest_bytes.clone();
        let pos = tampered.iter().position(|&b| b == b'd').unwrap();
        tampered[pos] = b'e';
        assert!(!env.verifies(&tampered));
    }

    #[test]
    fn envelope_checks() {
        let key = SecretKey::from_seed([3; 32]);
        let env = SignatureEnvelope::sign(b"m", &key);
        let mut bad = env.clone();
        bad.key_id = "0000000000000000".into();
        assert!(SignatureEnvelope::parse(&bad.to_bytes()).is_err());
        let mut bad = env.clone();
        bad.signature = "AAAA".into();
        assert!(SignatureEnvelope::parse(&bad.to_bytes()).is_err());
        assert!(SignatureEnvelope::parse(b"{}").is_err());
        let mut spaced = env.to_bytes();
        spaced.insert(1, b' ');
        assert!(SignatureEnvelope::parse(&spaced).is_err());
    }
}
