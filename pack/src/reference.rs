//! Pack references as users type them: `NAME`, `NAME:VERSION` or `NAME:TAG`.

use std::fmt;
use std::str::FromStr;

use crate::manifest::validate_name;

/// What follows the colon in a reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Version(semver::Version),
    Tag(String),
}

/// A parsed `NAME[:VERSION|:TAG]`; a bare name means the tag `latest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackRef {
    pub name: String,
    pub selector: Selector,
}

/// A reference that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid pack reference {input:?}: {reason}")]
pub struct RefParseError {
    pub input: String,
    pub reason: String,
}

/// The tag a bare name refers to, and that `pack save` moves to the newest version.
pub const LATEST: &str = "latest";

/// Checks a tag: the same alphabet as names, and never a valid semver (so `NAME:X` is never
/// ambiguous between a version and a tag).
pub fn validate_tag(tag: &str) -> Result<(), String> {
    validate_name(tag).map_err(|r| format!("tag {r}"))?;
    if semver::Version::parse(tag).is_ok() {
        return Err(format!(
            "tag {tag:?} looks like a version; tags must not be versions"
        ));
    }
    Ok(())
}

impl FromStr for PackRef {
    type Err = RefParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| RefParseError {
            input: s.to_owned(),
            reason,
        };
        let (name, selector) = match s.split_once(':') {
            None => (s, Selector::Tag(LATEST.to_owned())),
            Some((name, rest)) => match semver::Version::parse(rest) {
                Ok(v) => (name, Selector::Version(v)),
                Err(_) => {
                    validate_tag(rest).map_err(err)?;
                    (name, Selector::Tag(rest.to_owned()))
                }
            },
        };
        validate_name(name).map_err(err)?;
        Ok(PackRef {
            name: name.to_owned(),
            selector,
        })
    }
}

impl fmt::Display for PackRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.selector {
            Selector::Version(v) => write!(f, "{}:{v}", self.name),
            Selector::Tag(t) => write!(f, "{}:{t}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        let r: PackRef = "det".parse().unwrap();
        assert_eq!(r.selector, Selector::Tag("latest".into()));
        let r: PackRef = "det:1.2.0".parse().unwrap();
        assert_eq!(r.selector, Selector::Version(semver::Version::new(1, 2, 0)));
        let r: PackRef = "det:prod".parse().unwrap();
        assert_eq!(r.selector, Selector::Tag("prod".into()));
        assert!("Det:1.0.0".parse::<PackRef>().is_err());
        assert!("det:".parse::<PackRef>().is_err());
        assert!(
            "det:1.0".parse::<PackRef>().is_ok(),
            "1.0 is not semver, so it is a tag"
        );
    }

    #[test]
    fn tags_are_never_versions() {
        assert!(validate_tag("1.0.0").is_err());
        assert!(validate_tag("stable").is_ok());
    }
}
