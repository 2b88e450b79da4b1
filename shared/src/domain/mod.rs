//! Domain values, validated where they enter (the API's request bodies and queries, and later
//! import rows): each is a newtype with a private field, built only by `parse`, so a value of
//! the type is valid by construction.
//!
//! A refusal is an [`Invalid`]: a phrase such as "must be at most 100 characters" that the
//! caller prefixes with the field's name. [`FieldErrors`] collects them, so one answer names
//! every invalid field. The coming rule conditions, bucket amounts and import rows live here
//! too.
//!
//! Each value the API accepts also says what it accepts in the OpenAPI document: its
//! `ToSchema` is built from the same constants as its `parse` (lengths in characters, as JSON
//! Schema counts them, measured on the value as sent, before any trimming), so the document and
//! the check cannot drift apart.

mod email;
mod fields;
mod money;
mod name;
mod password;
mod project;
mod quiet_hours;
mod text;
mod time;

pub use email::{EmailAddress, MAX_EMAIL, domain_of};
pub use fields::{FieldError, FieldErrors, from_json_object, read_json_object};
pub use money::{
    Amount, Currency, MAX_DECIMAL_PLACES, MAX_INTEGER_DIGITS, SIGNED_AMOUNT_PATTERN, Sign,
    SignedAmount, UNSIGNED_AMOUNT_PATTERN, UnsignedAmount,
};
pub use name::{DisplayName, MAX_NAME, NonBlankName};
pub use password::{MAX_PASSWORD, MIN_PASSWORD, Password, check_policy};
pub use project::{
    DESCRIPTION_PATTERN, Description, MAX_DESCRIPTION, MAX_EVENTS_PER_SECOND, MAX_SLUG,
    ProjectSettings, ProjectStatus, Slug,
};
pub use quiet_hours::{QuietHours, parse_time_of_day, parse_time_zone};
pub use text::{IdempotencyKey, MAX_IDEMPOTENCY_KEY, MAX_SEARCH, SearchTerm};
pub use time::parse_instant;

use std::{borrow::Cow, fmt, ops::RangeInclusive};

/// Why a value was refused: a phrase that reads after the field's name ("must be …").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(Cow<'static, str>);

impl Invalid {
    /// A refusal with this message.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self(message.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// `value` if it lies in `range`.
pub fn within<T: PartialOrd + fmt::Display>(
    value: T,
    range: RangeInclusive<T>,
) -> Result<T, Invalid> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::new(format!(
            "must be between {} and {} (got {value})",
            range.start(),
            range.end()
        )))
    }
}

/// A UUID in its hyphenated form (`8-4-4-4-12` hex digits, either case), the one JSON Schema's
/// `uuid` format names; the other forms `Uuid::parse_str` would take (bare hex, braces, URN)
/// are refused, so the API accepts what its document says and nothing else.
pub fn parse_uuid(raw: &str) -> Result<uuid::Uuid, Invalid> {
    let hyphenated = raw.len() == 36
        && raw.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    hyphenated
        .then(|| uuid::Uuid::parse_str(raw).ok())
        .flatten()
        .ok_or_else(|| Invalid::new("must be a UUID (8-4-4-4-12 hex digits)"))
}

/// A required value: absent (or JSON `null`) is refused.
pub fn required<T>(value: Option<T>) -> Result<T, Invalid> {
    value.ok_or_else(|| Invalid::new("is required"))
}

/// JSON Schema `pattern` of a string without control characters (Unicode category Cc, what
/// `char::is_control` finds): what [`no_control_characters`] lets through.
pub const PRINTABLE_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// JSON Schema `pattern` of a string without NUL characters.
pub const NO_NUL_PATTERN: &str = "^[^\\u0000]*$";

/// JSON Schema `pattern` of a string without control characters that is not blank: it has a
/// character `str::trim` keeps (one that is not Unicode `White_Space`).
pub const PRINTABLE_NOT_BLANK_PATTERN: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*\
     [^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]\
     [^\\u0000-\\u001f\\u007f-\\u009f]*$";

/// JSON Schema `pattern` of a string without NUL characters that is not blank.
pub const NO_NUL_NOT_BLANK_PATTERN: &str = "^[^\\u0000]*\
     [^\\u0000\\u0009-\\u000d\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]\
     [^\\u0000]*$";

/// A string schema for the OpenAPI document (the `ToSchema` of the values here).
fn string_schema(description: String) -> utoipa::openapi::schema::ObjectBuilder {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
}

/// Characters that show nothing but change how text around them reads: format characters
/// (zero-width spaces and joiners, the byte-order mark, direction marks and overrides, the soft
/// hyphen). Spreadsheets skip them before a formula; a bidi override can make a name in an
/// email subject read backwards.
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

/// Free text made fit for one short line that a person reads out of context (an email
/// subject): controls and invisible characters dropped, whitespace runs collapsed to one
/// space, at most `max` characters (cut ones end in `…`).
pub fn one_line(text: &str, max: usize) -> String {
    let visible: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .filter(|c| !is_invisible(*c))
        .collect();
    let words = visible.split_whitespace().collect::<Vec<_>>().join(" ");
    if words.chars().count() <= max {
        return words;
    }
    let mut cut: String = words.chars().take(max.saturating_sub(1)).collect();
    cut.truncate(cut.trim_end().len());
    cut.push('…');
    cut
}

/// Refuses control characters (NUL among them: Postgres cannot store it in text).
fn no_control_characters(s: &str) -> Result<(), Invalid> {
    if s.chars().any(char::is_control) {
        return Err(Invalid::new("must not contain control characters"));
    }
    Ok(())
}

/// Refuses strings longer than `max` characters.
fn at_most(s: &str, max: usize) -> Result<(), Invalid> {
    if s.chars().count() > max {
        return Err(Invalid::new(format!("must be at most {max} characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_read_in_their_hyphenated_form_only() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(parse_uuid(&id.to_string()), Ok(id));
        assert_eq!(parse_uuid(&id.to_string().to_uppercase()), Ok(id));
        for bad in [
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            format!(" {id}"),
            String::new(),
            "e3e70682-c209-1cac-a29f-6fbed82c07cg".into(),
        ] {
            assert!(parse_uuid(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn within_accepts_the_bounds_and_names_them_when_refusing() {
        assert_eq!(within(5, 1..=5), Ok(5));
        assert_eq!(within(1, 1..=5), Ok(1));
        let err = within(0, 1..=5).unwrap_err();
        assert_eq!(err.message(), "must be between 1 and 5 (got 0)");
    }

    #[test]
    fn one_line_drops_controls_and_invisibles_collapses_spaces_and_cuts() {
        assert_eq!(one_line("  Ada \n\t Lovelace ", 40), "Ada Lovelace");
        // a right-to-left override and zero-width characters are gone
        assert_eq!(
            one_line("Eve\u{202E}moc.live\u{200B}\u{FEFF}", 40),
            "Evemoc.live"
        );
        assert_eq!(one_line("abcdef", 6), "abcdef");
        assert_eq!(one_line("abc defg", 6), "abc d…");
        assert_eq!(one_line("abcd  efg", 6), "abcd…");
        assert_eq!(one_line(&"é".repeat(100), 10).chars().count(), 10);
    }
}
