//! [`DisplayName`]: how a user is shown.

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{RefOr, schema::Schema},
};

use super::{
    Invalid, PRINTABLE_NOT_BLANK_PATTERN, PRINTABLE_PATTERN, at_most, no_control_characters,
    string_schema,
};

/// A display name: at most 100 characters as sent, no control characters, trimmed; blank is
/// refused (or means none, for an optional name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Longest display name accepted (characters, as sent).
pub const MAX_NAME: usize = 100;

impl DisplayName {
    /// Parses a name; blank is refused.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        match Self::parse_optional(Some(raw))? {
            Some(name) => Ok(name),
            None => Err(Invalid::new("must not be blank")),
        }
    }

    /// Parses an optional name: absent or blank is none.
    pub fn parse_optional(raw: Option<&str>) -> Result<Option<Self>, Invalid> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        // the limits hold for the value as sent, as the OpenAPI document says
        at_most(raw, MAX_NAME)?;
        no_control_characters(raw)?;
        let name = raw.trim();
        Ok((!name.is_empty()).then(|| Self(name.to_owned())))
    }
}

impl AsRef<str> for DisplayName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialSchema for DisplayName {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "A display name: at most {MAX_NAME} characters, no control characters; surrounding \
             whitespace is trimmed, and a blank name is none."
        ))
        .max_length(Some(MAX_NAME))
        .pattern(Some(PRINTABLE_PATTERN))
        .into()
    }
}

impl ToSchema for DisplayName {}

/// The OpenAPI schema of a name that must be given ([`DisplayName::parse`]: blank refused), as a
/// project's or an API key's: `#[schema(value_type = NonBlankName)]`.
pub struct NonBlankName;

impl PartialSchema for NonBlankName {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "A name: 1 to {MAX_NAME} characters, no control characters, not blank (stored \
             trimmed)."
        ))
        .min_length(Some(1))
        .max_length(Some(MAX_NAME))
        .pattern(Some(PRINTABLE_NOT_BLANK_PATTERN))
        .into()
    }
}

impl ToSchema for NonBlankName {}

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
        assert_eq!(DisplayName::parse_optional(Some("")).unwrap(), None);
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

    #[test]
    fn the_length_limit_holds_for_the_name_as_sent() {
        // 100 characters once trimmed, 102 as sent: the document says at most 100
        let padded = format!(" {} ", "x".repeat(100));
        assert!(DisplayName::parse_optional(Some(&padded)).is_err());
        // a control character in the whitespace around a name is refused too
        assert!(DisplayName::parse_optional(Some("Ada\n")).is_err());
    }
}
