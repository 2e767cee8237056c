//! ed25519 signing keys and their text forms.
//!
//! - public key: `ed25519:<base64 of 32 bytes>`
//! - secret key file: `aq-ed25519-secret:<base64 of the 32-byte seed>`
//! - key id: the first 16 hex digits of blake3 over the public key bytes.
//!
//! Key generation takes its random seed from the caller: this crate does no I/O.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, Verifier};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const PUBLIC_PREFIX: &str = "ed25519:";
const SECRET_PREFIX: &str = "aq-ed25519-secret:";

/// A key that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    #[error("invalid public key: expected \"ed25519:\" followed by base64 of 32 bytes")]
    InvalidPublicKey,
    #[error(
        "invalid secret key file: expected one line \"aq-ed25519-secret:<base64 of 32 bytes>\""
    )]
    InvalidSecretKey,
}

/// An ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

/// An ed25519 secret key (the 32-byte seed).
pub struct SecretKey(ed25519_dalek::SigningKey);

impl SecretKey {
    /// Builds a key from 32 random bytes supplied by the caller.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `message` (already domain-separated by the caller).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.0.sign(message).to_bytes()
    }

    /// The key file text (one line, with a trailing newline).
    pub fn to_file_text(&self) -> String {
        format!("{SECRET_PREFIX}{}\n", STANDARD.encode(self.0.to_bytes()))
    }

    /// Parses key file text.
    pub fn from_file_text(text: &str) -> Result<Self, KeyError> {
        let b64 = text
            .trim()
            .strip_prefix(SECRET_PREFIX)
            .ok_or(KeyError::InvalidSecretKey)?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| KeyError::InvalidSecretKey)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidSecretKey)?;
        Ok(SecretKey::from_seed(seed))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {})", self.public_key())
    }
}

impl PublicKey {
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Short stable identifier: 16 hex digits of blake3 over the key bytes.
    pub fn key_id(&self) -> String {
        crate::digest::Digest::of(&self.to_bytes()).to_hex()[..16].to_owned()
    }

    /// Checks an ed25519 signature (strict verification: rejects malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(signature);
        self.0.verify_strict(message, &sig).is_ok() && self.0.verify(message, &sig).is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", STANDARD.encode(self.to_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b64 = s
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or(KeyError::InvalidPublicKey)?;
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| KeyError::InvalidPublicKey)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| KeyError::InvalidPublicKey)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::InvalidPublicKey)?;
        if key.is_weak() {
            return Err(KeyError::InvalidPublicKey);
        }
        Ok(PublicKey(key))
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        let sk = SecretKey::from_seed([7; 32]);
        let text = sk.to_file_text();
        let back = SecretKey::from_file_text(&text).unwrap();
        assert_eq!(back.public_key(), sk.public_key());
        let pk: PublicKey = sk.public_key().to_string().parse().unwrap();
        assert_eq!(pk, sk.public_key());
        assert_eq!(pk.key_id().len(), 16);
    }

    #[test]
    fn sign_verify() {
        let sk = SecretKey::from_seed([1; 32]);
        let sig = sk.sign(b"hello");
        assert!(sk.public_key().verify(b"hello", &sig));
        assert!(!sk.public_key().verify(b"hellO", &sig));
        let other = SecretKey::from_seed([2; 32]);
        assert!(!other.public_key().verify(b"hello", &sig));
    }

    #[test]
    fn rejects_bad_text() {
        assert!("ed25519:".parse::<PublicKey>().is_err());
        assert!("rsa:AAAA".parse::<PublicKey>().is_err());
        assert!(SecretKey::from_file_text("aq-ed25519-secret:Zm9v").is_err());
        assert!(SecretKey::from_file_text("").is_err());
    }
}
