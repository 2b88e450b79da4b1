//! Error fingerprints: an error text with what varies between occurrences of the same failure
//! (ids, numbers, quoted values, addresses) masked, so that the dead jobs of one cause group
//! together (`GET /api/v1/jobs/failures`) and a thousand identical failures make one alert.

/// The longest fingerprint kept: errors that differ only past it group together.
pub const MAX_LEN: usize = 300;

/// `error` with its variable parts masked: quoted values become `'?'`, UUIDs and long hex
/// strings `<id>`, e-mail addresses `<email>`, numbers `<n>` (including decimals and numbers
/// glued to units, as in `500ms`); runs of whitespace become one space. The result is cut at
/// [`MAX_LEN`] characters.
///
/// ```
/// use shared::queue::fingerprint::fingerprint;
/// assert_eq!(
///     fingerprint("webhook 7f0c2a1e-1b2c-4d5e-8f90-123456789abc answered 503 after 1500ms"),
///     fingerprint("webhook 0b1c2d3e-aaaa-4bbb-8ccc-dddddddddddd answered 502 after 20ms"),
/// );
/// ```
pub fn fingerprint(error: &str) -> String {
    let mut out = String::with_capacity(error.len().min(MAX_LEN));
    let chars: Vec<char> = error.chars().collect();
    let mut i = 0;
    while i < chars.len() && out.chars().count() < MAX_LEN {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // a quoted value: masked up to its closing quote (an unclosed one is kept as text)
            if let Some(end) = chars[i + 1..].iter().position(|&d| d == c) {
                out.push_str("'?'");
                i += end + 2;
                continue;
            }
        }
        if c.is_whitespace() {
            if !out.ends_with(' ') {
                out.push(' ');
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == '@' || c == '+' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || "_-.@+:".contains(chars[i]))
                // a ':' continues a MAC-like hex word only (`https:` ends a word)
                && (chars[i] != ':' || is_hexish(&chars[start..i]))
            {
                i += 1;
            }
            // a trailing '.' or ':' ends a sentence or a label, not the word
            while i > start + 1 && matches!(chars[i - 1], '.' | ':' | '-') {
                i -= 1;
            }
            let word: String = chars[start..i].iter().collect();
            out.push_str(&mask_word(&word));
            if i == start {
                out.push(c);
                i += 1;
            }
            continue;
        }
        out.push(c);
        i += 1;
    }
    out.trim().chars().take(MAX_LEN).collect()
}

fn is_hexish(chars: &[char]) -> bool {
    !chars.is_empty() && chars.iter().all(|c| c.is_ascii_hexdigit())
}

/// One word of an error: masked if it is a value, kept if it is text.
fn mask_word(word: &str) -> String {
    if word.contains('@') && word.contains('.') && !word.starts_with('@') {
        return "<email>".into();
    }
    let hex_digits = word.chars().filter(char::is_ascii_hexdigit).count();
    let has_digit = word.chars().any(|c| c.is_ascii_digit());
    let id_like = word
        .chars()
        .all(|c| c.is_ascii_hexdigit() || c == '-' || c == ':');
    if has_digit && id_like && hex_digits >= 8 {
        return "<id>".into();
    }
    // numbers, alone or glued to letters (`500ms`, `v2`, `row42`): each digit run is masked
    let mut out = String::with_capacity(word.len());
    let mut in_number = false;
    let chars: Vec<char> = word.chars().collect();
    for (k, &c) in chars.iter().enumerate() {
        // a '.' or ',' between digits is part of the number (`30.5`, `1,200`); another one
        // is text (`mx3.host`)
        let inner = (c == '.' || c == ',') && chars.get(k + 1).is_some_and(char::is_ascii_digit);
        if c.is_ascii_digit() || (in_number && inner) {
            if !in_number {
                out.push_str("<n>");
                in_number = true;
            }
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_numbers_quotes_and_addresses_are_masked_words_are_kept() {
        assert_eq!(
            fingerprint("SMTP 550 for bob@example.com: mailbox 'bob' unknown"),
            "SMTP <n> for <email>: mailbox '?' unknown"
        );
        assert_eq!(
            fingerprint("job 0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b timed out after 30.5s"),
            "job <id> timed out after <n>s"
        );
        assert_eq!(
            fingerprint("row 42: \"x@y\" is not an email"),
            "row <n>: '?' is not an email"
        );
        assert_eq!(
            fingerprint("hash deadbeefcafe1234 mismatch"),
            "hash <id> mismatch"
        );
        assert_eq!(
            fingerprint("no route to mx3.host"),
            "no route to mx<n>.host"
        );
        assert_eq!(fingerprint("took 1.5 s"), "took <n> s");
    }

    #[test]
    fn occurrences_of_one_failure_share_a_fingerprint_different_failures_do_not() {
        let a = fingerprint("webhook https://h/1 answered 503 in 1200ms");
        let b = fingerprint("webhook https://h/2 answered 502 in 80ms");
        let c = fingerprint("webhook https://h/2 refused the connection");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(fingerprint("  a \n\t b "), "a b");
    }

    #[test]
    fn a_fingerprint_is_bounded_and_survives_any_text() {
        let long = "x ".repeat(10_000);
        assert!(fingerprint(&long).chars().count() <= MAX_LEN);
        for text in [
            "",
            "'",
            "\"unclosed",
            "é 🚀 12",
            "::::",
            "@",
            "-",
            "a.",
            "\u{0}",
        ] {
            let _ = fingerprint(text);
        }
        assert_eq!(fingerprint("it's"), "it's");
    }
}
