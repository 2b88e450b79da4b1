//! Short free-text values: search terms and idempotency keys.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{RefOr, schema::Schema},
};

use super::{Invalid, PRINTABLE_PATTERN, at_most, no_control_characters, string_schema};

/// A search term or exact-match filter: at most 200 characters as sent, no control characters,
/// trimmed; blank is no filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchTerm(String);

/// Longest search term accepted (characters, as sent).
pub const MAX_SEARCH: usize = 200;

impl SearchTerm {
    /// Parses an optional term: absent or blank is none.
    pub fn parse_optional(raw: Option<&str>) -> Result<Option<Self>, Invalid> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        // the limits hold for the value as sent, as the OpenAPI document says
        at_most(raw, MAX_SEARCH)?;
        no_control_characters(raw)?;
        let term = raw.trim();
        Ok((!term.is_empty()).then(|| Self(term.to_owned())))
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

impl PartialSchema for SearchTerm {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "At most {MAX_SEARCH} characters, no control characters; surrounding whitespace is \
             trimmed, and a blank value is no filter."
        ))
        .max_length(Some(MAX_SEARCH))
        .pattern(Some(PRINTABLE_PATTERN))
        .into()
    }
}

impl ToSchema for SearchTerm {}

/// A client's idempotency key: 1 to 200 characters, no control characters, taken as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// Longest idempotency key accepted (characters).
pub const MAX_IDEMPOTENCY_KEY: usize = 200;

impl IdempotencyKey {
    /// Checks a key.
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        if raw.is_empty()
            || at_most(&raw, MAX_IDEMPOTENCY_KEY).is_err()
            || no_control_characters(&raw).is_err()
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

impl PartialSchema for IdempotencyKey {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "1 to {MAX_IDEMPOTENCY_KEY} characters, no control characters, taken as sent."
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_IDEMPOTENCY_KEY))
        .pattern(Some(PRINTABLE_PATTERN))
        .into()
    }
}

impl ToSchema for IdempotencyKey {}

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
    fn a_search_term_is_bounded_as_sent() {
        // 200 characters once trimmed, 201 as sent: the document says at most 200
        assert!(SearchTerm::parse_optional(Some(&format!("{} ", "x".repeat(200)))).is_err());
        assert!(SearchTerm::parse_optional(Some("ada\t")).is_err());
    }

    #[test]
    fn idempotency_keys_are_1_to_200_printable_characters() {
        assert!(IdempotencyKey::parse(String::new()).is_err());
        assert!(IdempotencyKey::parse("k".repeat(200)).is_ok());
        assert!(IdempotencyKey::parse("k".repeat(201)).is_err());
        assert!(
            IdempotencyKey::parse("é".repeat(200)).is_ok(),
            "characters, not bytes"
        );
        assert!(IdempotencyKey::parse("line\nbreak".into()).is_err());
        assert!(IdempotencyKey::parse("nul\0".into()).is_err());
    }
}
