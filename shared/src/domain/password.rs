//! [`Password`]: a password a user chooses, and the one password policy every route that sets
//! a password applies (accepting an invitation, changing or resetting a password, creating a
//! user): [`Password::parse`] (or [`check_policy`] for a bare check).
//!
//! The policy: 12 to 128 characters, no NUL, not one character repeated, and not one of the
//! common passwords listed in `common-passwords.txt` beside this file (compared without regard
//! to case or surrounding whitespace; embedded in the binary). Hashing stays Argon2id
//! (`crate::secrets::hash_password`).

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{RefOr, schema::Schema},
};

use super::{Invalid, NO_NUL_PATTERN, string_schema};

/// A new password that passed the policy (see the module doc). Never logged or serialized.
#[derive(Clone)]
pub struct Password(String);

/// Shortest password accepted (characters).
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (characters).
pub const MAX_PASSWORD: usize = 128;

/// The common passwords the policy refuses, one per line (`#` comments).
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

fn is_common(raw: &str) -> bool {
    use std::{collections::HashSet, sync::LazyLock};
    static COMMON: LazyLock<HashSet<String>> = LazyLock::new(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_lowercase)
            .collect()
    });
    COMMON.contains(&raw.trim().to_lowercase())
}

/// The password policy, as a plain function: `Ok` for a password a user may choose, else why
/// not (a phrase that reads after the field's name). [`Password::parse`] applies it.
pub fn check_policy(raw: &str) -> Result<(), Invalid> {
    let chars = raw.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
        return Err(Invalid::new(format!(
            "must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        )));
    }
    if raw.contains('\0') {
        return Err(Invalid::new("must not contain NUL characters"));
    }
    let mut distinct = raw.chars();
    let first = distinct.next();
    if distinct.all(|c| Some(c) == first) {
        return Err(Invalid::new("must not be one character repeated"));
    }
    if is_common(raw) {
        return Err(Invalid::new(
            "is a commonly used password; choose one that is harder to guess",
        ));
    }
    Ok(())
}

impl Password {
    /// Checks a chosen password against the policy ([`check_policy`]).
    pub fn parse(raw: String) -> Result<Self, Invalid> {
        check_policy(&raw)?;
        Ok(Self(raw))
    }
}

impl AsRef<str> for Password {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialSchema for Password {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "A new password: {MIN_PASSWORD} to {MAX_PASSWORD} characters, no NUL; not one \
             character repeated, and not one of the common passwords Comet ships a list of \
             (refused with 422 naming the field)."
        ))
        .min_length(Some(MIN_PASSWORD))
        .max_length(Some(MAX_PASSWORD))
        .pattern(Some(NO_NUL_PATTERN))
        .into()
    }
}

impl ToSchema for Password {}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_12_to_128_characters_without_nul() {
        assert!(Password::parse("xy".repeat(5) + "z").is_err());
        assert!(Password::parse("xy".repeat(6)).is_ok());
        assert!(Password::parse("éa".repeat(64)).is_ok());
        assert!(Password::parse("xy".repeat(64) + "z").is_err());
        assert!(Password::parse(format!("{}\0", "xy".repeat(6))).is_err());
        assert_eq!(
            format!("{:?}", Password::parse("xy".repeat(6)).unwrap()),
            "Password(..)"
        );
    }

    #[test]
    fn common_and_repeated_passwords_are_refused_whatever_their_case() {
        for common in [
            "password1234",
            "PassWord1234",
            " qwertyuiop123 ",
            "1q2w3e4r5t6y",
        ] {
            let err = Password::parse(common.to_owned()).expect_err(common);
            assert!(err.message().contains("commonly used"), "{common}: {err}");
        }
        let err = Password::parse("a".repeat(20)).expect_err("repeated");
        assert_eq!(err.message(), "must not be one character repeated");
        assert!(check_policy("a perfectly fine password").is_ok());
        // every listed password is refused (no line of the list is shorter than the minimum,
        // where it would be dead weight)
        for line in COMMON_PASSWORDS
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            assert!(
                line.chars().count() >= MIN_PASSWORD,
                "{line} is too short to list"
            );
            assert!(check_policy(line).is_err(), "{line}");
        }
    }
}
