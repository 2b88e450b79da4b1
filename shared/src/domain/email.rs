//! [`EmailAddress`]: a user's address, as stored (lower-cased, at most 254 characters).

use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{KnownFormat, Schema, SchemaFormat},
    },
};

use super::{Invalid, string_schema};

/// A syntactically valid email address, trimmed and lower-cased; no display name, no domain
/// literal, and a top-level domain is required (`ada@localhost` is refused). Look-alikes are
/// refused rather than normalised: a local part or a domain label that mixes letters of
/// several scripts (a Cyrillic `а` among Latin letters) is invalid, because such an address is
/// made to pass for another one (the allowed-domain check, an admin reading the user list).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

/// Longest address accepted (RFC 5321's path limit, minus the angle brackets), in characters
/// as sent.
pub const MAX_EMAIL: usize = 254;

impl EmailAddress {
    /// Parses an address as a user typed it.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        // the limit holds for the address as sent, as the OpenAPI document says
        if raw.chars().count() > MAX_EMAIL {
            return Err(Invalid::new(format!(
                "must be at most {MAX_EMAIL} characters"
            )));
        }
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err(Invalid::new("is required"));
        }
        let options = email_address::Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        email_address::EmailAddress::parse_with_options(&email, options).map_err(|e| {
            Invalid::new(format!(
                "is not a valid email address ({})",
                e.to_string().trim_end_matches('.')
            ))
        })?;
        let (local, domain) = email.rsplit_once('@').unwrap_or((&email, ""));
        for part in std::iter::once(local).chain(domain.split('.')) {
            if mixes_scripts(part) {
                return Err(Invalid::new(format!(
                    "mixes letters of several scripts in {part:?} (a look-alike address)"
                )));
            }
        }
        Ok(Self(email))
    }

    /// What follows the last `@`.
    pub fn domain(&self) -> &str {
        domain_of(&self.0)
    }

    /// The address.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl PartialSchema for EmailAddress {
    fn schema() -> RefOr<Schema> {
        string_schema(format!(
            "An email address of at most {MAX_EMAIL} characters, with a top-level domain and no \
             display name or domain literal; case does not matter (stored lower-cased). A local \
             part or domain label mixing letters of several scripts is refused."
        ))
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Email)))
        .max_length(Some(MAX_EMAIL))
        .into()
    }
}

impl ToSchema for EmailAddress {}

/// The script of a letter, coarsely: enough to tell look-alikes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Script {
    Latin,
    Greek,
    Cyrillic,
    Armenian,
    Other,
}

fn script_of(c: char) -> Option<Script> {
    if !c.is_alphabetic() {
        return None;
    }
    Some(match c as u32 {
        0x0041..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF => Script::Latin,
        0x0370..=0x03FF | 0x1F00..=0x1FFF => Script::Greek,
        0x0400..=0x052F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x0530..=0x058F => Script::Armenian,
        _ => Script::Other,
    })
}

/// Whether `part` has letters of more than one script.
fn mixes_scripts(part: &str) -> bool {
    let mut scripts = part.chars().filter_map(script_of);
    let Some(first) = scripts.next() else {
        return false;
    };
    scripts.any(|s| s != first)
}

/// What follows the last `@` of an address (empty without one).
pub fn domain_of(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

impl AsRef<str> for EmailAddress {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            EmailAddress::parse("  Ada@Example.COM ").unwrap().as_ref(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "Ada <ada@example.com>",
            "ada@localhost",
            "a b@example.com",
            "a\0b@example.com",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} is refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(
            EmailAddress::parse(&long).unwrap_err().message(),
            "must be at most 254 characters"
        );
    }

    #[test]
    fn look_alike_addresses_mixing_scripts_are_refused() {
        // Cyrillic а (U+0430) among Latin letters, in the local part and in the domain
        for bad in [
            "\u{430}da@example.com",
            "ada@ex\u{430}mple.com",
            "ada@example.c\u{43e}m",
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert!(
                err.message().contains("several scripts"),
                "{bad:?}: {}",
                err.message()
            );
        }
        // one script per part is fine, whichever it is
        for good in [
            "ада@пример.рф",
            "ada@example.com",
            "ada.1+x@sub.example.com",
        ] {
            assert!(EmailAddress::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn the_domain_is_what_follows_the_last_at() {
        assert_eq!(
            EmailAddress::parse("a@b.example").unwrap().domain(),
            "b.example"
        );
        assert_eq!(domain_of("nope"), "");
    }
}
