//! Short free-text values: search terms and idempotency keys.

use super::{Invalid, at_most, no_control_characters};

/// A search term or exact-match filter: trimmed, at most 200 characters, no control
/// characters; blank is no filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

/// Longest search term accepted (characters).
pub const MAX_SEARCH: usize = 200;

impl SearchTerm {
    /// Parses an optional term: absent or blank is none.
    pub fn parse_optional(raw: Option<&str>) -> Result<Option<Self>, Invalid> {
        let Some(term) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(None);
        };
        at_most(term, MAX_SEARCH)?;
        no_control_characters(term)?;
        Ok(Some(Self(term.to_owned())))
    }

    /// The term.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl AsRef<str> for SearchTerm {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// A client's idempotency key: 1 to 200 bytes, no control characters, taken as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// Longest idempotency key accepted (bytes).
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

impl IdempotencyKey {
    /// Checks a key.
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY || no_control_characters(&raw).is_err()
        {
            return Err(Invalid::new(format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY} printable characters"
            )));
        }
        Ok(Self(raw))
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_are_trimmed_bounded_and_printable() {
        assert_eq!(
            SearchTerm::parse_optional(Some(" ada ")).unwrap(),
            Some(SearchTerm("ada".into()))
        );
        assert_eq!(SearchTerm::parse_optional(Some("  ")).unwrap(), None);
        assert!(SearchTerm::parse_optional(Some(&"x".repeat(200))).is_ok());
        assert!(SearchTerm::parse_optional(Some(&"x".repeat(201))).is_err());
        assert!(SearchTerm::parse_optional(Some("a\0b")).is_err());
    }

    #[test]
    fn idempotency_keys_are_1_to_200_printable_bytes() {
        assert!(IdempotencyKey::parse(String::new()).is_err());
        assert!(IdempotencyKey::parse("k".repeat(200)).is_ok());
        assert!(IdempotencyKey::parse("k".repeat(201)).is_err());
        assert!(IdempotencyKey::parse("line\nbreak".into()).is_err());
        assert!(IdempotencyKey::parse("nul\0".into()).is_err());
    }
}
