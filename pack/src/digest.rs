//! Content digests: blake3 over raw bytes, written as `blake3:<64 lowercase hex>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The textual prefix of every digest in a manifest.
pub const PREFIX: &str = "blake3:";

/// A blake3 digest of some bytes (a chunk, a whole file, or a manifest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

/// A digest string that is not `blake3:` followed by 64 lowercase hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid digest {0:?}: expected \"blake3:\" followed by 64 lowercase hex digits")]
pub struct DigestParseError(pub String);

impl Digest {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The 64 lowercase hex digits, without the `blake3:` prefix (used for file names).
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    /// Parses 64 lowercase hex digits (no prefix).
    pub fn from_hex(hex: &str) -> Result<Self, DigestParseError> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return Err(DigestParseError(hex.to_owned()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(|| DigestParseError(hex.to_owned()))?;
            let lo = hex_value(pair[1]).ok_or_else(|| DigestParseError(hex.to_owned()))?;
            out[i] = (hi << 4) | lo;
        }
        Ok(Digest(out))
    }

    /// A short form for human output: the first 12 hex digits.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_owned()
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for Digest {
    type Err = DigestParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s
            .strip_prefix(PREFIX)
            .ok_or_else(|| DigestParseError(s.to_owned()))?;
        Digest::from_hex(hex).map_err(|_| DigestParseError(s.to_owned()))
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_vector() {
        let d = Digest::of(b"");
        assert_eq!(
            d.to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn rejects_uppercase_and_missing_prefix() {
        let upper = format!("blake3:{}", "A".repeat(64));
        assert!(upper.parse::<Digest>().is_err());
        assert!("a".repeat(64).parse::<Digest>().is_err());
        assert!("blake3:abc".parse::<Digest>().is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let d = Digest(bytes);
            prop_assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
            prop_assert_eq!(Digest::from_hex(&d.to_hex()).unwrap(), d);
        }
    }
}
