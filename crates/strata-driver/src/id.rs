//! Layer ids, validated where they enter Strata so that an id can never
//! act as a path: one leading alphanumeric, then up to 127 of
//! `[A-Za-z0-9_.-]`. That admits Docker's 64-hex cache ids and their
//! `-init` siblings, and rules out `/`, `..`, empty names and NUL.

use std::fmt;

use crate::DriverError;

/// Longest id accepted (bytes).
pub const MAX_ID_LEN: usize = 128;

/// Suffix of a layer directory whose removal is under way (the seed's
/// convention); ids may not end with it or they would be swept.
pub const REMOVING_SUFFIX: &str = "-removing";

/// Names in the home that are Strata's own and so cannot be layer ids.
const RESERVED: &[&str] = &["staging"];

/// A validated layer id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(String);

impl LayerId {
    /// Validates `s` as a layer id.
    pub fn new(s: &str) -> Result<LayerId, DriverError> {
        let bad = |reason: &str| DriverError::InvalidId {
            id: s.to_string(),
            reason: reason.into(),
        };
        let bytes = s.as_bytes();
        match bytes.first() {
            None => return Err(bad("empty")),
            Some(b) if !b.is_ascii_alphanumeric() => {
                return Err(bad("must start with a letter or digit"));
            }
            _ => {}
        }
        if bytes.len() > MAX_ID_LEN {
            return Err(bad("longer than 128 bytes"));
        }
        if let Some(c) = bytes
            .iter()
            .find(|&&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
        {
            return Err(bad(&format!("character {:?} is not allowed", *c as char)));
        }
        if s.ends_with(REMOVING_SUFFIX) {
            return Err(bad(
                "ids ending in -removing are reserved for removals in progress",
            ));
        }
        if RESERVED.contains(&s) {
            return Err(bad("reserved name"));
        }
        Ok(LayerId(s.to_string()))
    }

    /// The id as a string (also its directory name in the home).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for LayerId {
    type Err = DriverError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LayerId::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_engine_ids() {
        let hex = "a".repeat(64);
        for ok in [
            hex.as_str(),
            &format!("{hex}-init"),
            "base",
            "L1.v2_x",
            &"z".repeat(128),
        ] {
            assert!(LayerId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_paths() {
        let long = "a".repeat(129);
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "/abs",
            "-x",
            "_x",
            "a\0b",
            "a b",
            &long,
            "x-removing",
            "staging",
        ] {
            let e = LayerId::new(bad).unwrap_err();
            assert!(e.to_string().contains("invalid layer id"), "{bad}: {e}");
        }
    }
}
