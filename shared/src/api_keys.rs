//! API keys' secrets: the `ck_<prefix>_<secret>` format, making keys, hashing them, and
//! checking a presented key in constant time. (The rows live in [`crate::db::api_keys`].)
//!
//! The prefix (12 characters, 60 random bits) is the key's visible, stored, indexed handle:
//! the look-up goes by prefix, then the presented key's SHA-256 is compared with the stored
//! hash in constant time ([`subtle`]). Only the hash is stored; the key is shown once.
//!
//! SHA-256, not Argon2, on purpose: the secret is 52 characters from a CSPRNG (260 bits), so a
//! stolen hash cannot be reversed by guessing, and a slow hash would only put a password
//! hasher's cost (tens of ms of CPU, the Argon2 gate) on every machine request.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every key starts with this.
pub const KEY_PREFIX: &str = "ck_";
/// Length of the visible prefix (characters).
pub const PREFIX_LEN: usize = 12;
/// Length of the secret part (characters; 5 bits each).
pub const SECRET_LEN: usize = 52;
/// Length of a whole key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + PREFIX_LEN + 1 + SECRET_LEN;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A freshly made key: the whole key (shown once, never stored), its prefix and its hash.
#[derive(Clone)]
pub struct NewKey {
    /// `ck_<prefix>_<secret>`: give it to the caller once.
    pub key: String,
    /// The visible prefix (stored, shown, looked up by).
    pub prefix: String,
    /// SHA-256 of the whole key (stored).
    pub hash: Vec<u8>,
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn random_chars(n: usize) -> String {
    // 256 is a multiple of 32: masking a uniform byte gives a uniform character
    (0..n)
        .map(|_| ALPHABET[usize::from(rand::random::<u8>() & 31)] as char)
        .collect()
}

/// A new key with a new prefix.
pub fn generate() -> NewKey {
    with_prefix(&random_chars(PREFIX_LEN))
}

/// A new secret for an existing prefix (rotation keeps the key's handle).
pub fn with_prefix(prefix: &str) -> NewKey {
    let key = format!("{KEY_PREFIX}{prefix}_{}", random_chars(SECRET_LEN));
    NewKey {
        hash: hash(&key),
        prefix: prefix.to_owned(),
        key,
    }
}

/// The prefix of a well-formed key; `None` for anything else (so nothing malformed reaches
/// the database).
pub fn prefix_of(presented: &str) -> Option<&str> {
    if presented.len() != KEY_LEN {
        return None;
    }
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (prefix, secret) = rest.split_once('_')?;
    let ours = |s: &str| s.bytes().all(|b| ALPHABET.contains(&b));
    (prefix.len() == PREFIX_LEN && secret.len() == SECRET_LEN && ours(prefix) && ours(secret))
        .then_some(prefix)
}

/// SHA-256 of a whole key.
pub fn hash(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Whether a presented key's hash equals a stored one, in time independent of where they
/// differ.
pub fn matches(presented_hash: &[u8], stored: &[u8]) -> bool {
    presented_hash.ct_eq(stored).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_back_to_its_prefix_and_hash() {
        let k = generate();
        assert_eq!(k.key.len(), KEY_LEN);
        assert!(k.key.starts_with("ck_"));
        assert_eq!(prefix_of(&k.key), Some(k.prefix.as_str()));
        assert!(matches(&hash(&k.key), &k.hash));
        assert_eq!(k.hash.len(), 32);
        assert!(!format!("{k:?}").contains(&k.key), "Debug hides the key");
    }

    #[test]
    fn rotation_keeps_the_prefix_and_changes_the_secret() {
        let a = generate();
        let b = with_prefix(&a.prefix);
        assert_eq!(prefix_of(&b.key), Some(a.prefix.as_str()));
        assert_ne!(a.key, b.key);
        assert!(!matches(&hash(&b.key), &a.hash));
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        let k = generate().key;
        assert_eq!(prefix_of(""), None);
        assert_eq!(prefix_of(&k[..k.len() - 1]), None);
        assert_eq!(prefix_of(&format!("{k}a")), None);
        assert_eq!(prefix_of(&k.replacen("ck_", "xx_", 1)), None);
        assert_eq!(prefix_of(&k.to_uppercase()), None);
        let mut bad = k.clone().into_bytes();
        bad[KEY_PREFIX.len() + PREFIX_LEN] = b'-';
        assert_eq!(prefix_of(&String::from_utf8(bad).unwrap()), None);
        assert!(!matches(&hash("a"), &hash("b")));
        assert!(
            !matches(&hash("a"), &[]),
            "a short stored value never matches"
        );
    }
}
