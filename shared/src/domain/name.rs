//! [`DisplayName`]: how a user is shown.

use super::{Invalid, at_most, no_control_characters};

/// A display name: trimmed, 1 to 100 characters, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Longest display name accepted (characters).
pub const MAX_NAME: usize = 100;

impl DisplayName {
    /// Parses a name; blank is refused.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        if name.is_empty() {
            return Err(Invalid::new("must not be blank"));
        }
        at_most(name, MAX_NAME)?;
        no_control_characters(name)?;
        Ok(Self(name.to_owned()))
    }

    /// Parses an optional name: absent or blank is none.
    pub fn parse_optional(raw: Option<&str>) -> Result<Option<Self>, Invalid> {
        match raw.map(str::trim).filter(|n| !n.is_empty()) {
            None => Ok(None),
            Some(name) => Self::parse(name).map(Some),
        }
    }
}

impl AsRef<str> for DisplayName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_blank_is_none() {
        assert_eq!(
            DisplayName::parse_optional(Some("  Ada ")).unwrap(),
            Some(DisplayName("Ada".into()))
        );
        assert_eq!(DisplayName::parse_optional(Some("   ")).unwrap(), None);
        assert_eq!(DisplayName::parse_optional(None).unwrap(), None);
        assert!(DisplayName::parse("  ").is_err());
        assert!(DisplayName::parse("a\u{7}b").is_err());
        assert!(DisplayName::parse("a\0b").is_err());
        assert!(DisplayName::parse(&"x".repeat(101)).is_err());
        assert!(
            DisplayName::parse(&"é".repeat(100)).is_ok(),
            "characters, not bytes"
        );
    }
}
