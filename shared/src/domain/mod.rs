//! Domain values, validated where they enter (the API's request bodies and queries, and later
//! import rows): each is a newtype with a private field, built only by `parse`, so a value of
//! the type is valid by construction.
//!
//! A refusal is an [`Invalid`]: a phrase such as "must be at most 100 characters" that the
//! caller prefixes with the field's name. [`FieldErrors`] collects them, so one answer names
//! every invalid field. The coming rule conditions, bucket amounts and import rows live here
//! too.

mod email;
mod fields;
mod name;
mod password;
mod project;
mod text;
mod time;

pub use email::{EmailAddress, domain_of};
pub use fields::{FieldError, FieldErrors, from_json_object, read_json_object};
pub use name::DisplayName;
pub use password::Password;
pub use project::{
    Description, MAX_DESCRIPTION, MAX_EVENTS_PER_SECOND, MAX_SLUG, ProjectSettings, ProjectStatus,
    Slug,
};
pub use text::{IdempotencyKey, SearchTerm};
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

/// A required value: absent (or JSON `null`) is refused.
pub fn required<T>(value: Option<T>) -> Result<T, Invalid> {
    value.ok_or_else(|| Invalid::new("is required"))
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
