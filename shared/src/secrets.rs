//! Secrets at rest: random tokens and their hashes, sealed tokens for job payloads, passwords.
//!
//! An invitation token is shown once (in the email). Postgres keeps only its SHA-256; the
//! `send_invitation` job carries it sealed (ChaCha20-Poly1305 under a key derived from
//! `JWT_SECRET`), so neither Postgres nor Redis holds it in the clear.
//!
//! Webhook signing secrets must stay usable to sign, so they cannot be hashed: Postgres keeps
//! them sealed the same way, under a key derived with its own label
//! ([`seal_webhook_secret`]), so a sealed job payload and a sealed signing secret never open
//! with each other's key.

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier, password_hash::SaltString};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{ChaCha20Poly1305, Key, KeyInit, Nonce, aead::Aead};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A new random token: 32 bytes from the OS CSPRNG, base64url without padding.
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// The SHA-256 of a token, hex (what is stored and looked up).
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Key-derivation label of sealed job payloads.
const JOB_PAYLOAD_LABEL: &[u8] = b"comet/job-payload-seal/v1:";
/// Key-derivation label of webhook signing secrets at rest.
const WEBHOOK_SECRET_LABEL: &[u8] = b"comet/webhook-secret-seal/v1:";

fn seal_key(label: &[u8], secret: &SecretString) -> Key {
    let mut h = Sha256::new();
    h.update(label);
    h.update(secret.expose_secret().as_bytes());
    Key::from(<[u8; 32]>::from(h.finalize()))
}

/// Seals a short secret for a job payload: base64url(nonce ‖ ciphertext).
pub fn seal(secret: &SecretString, plaintext: &str) -> String {
    seal_labelled(JOB_PAYLOAD_LABEL, secret, plaintext)
}

/// Opens what [`seal`] made; `None` if it was tampered with or sealed under another key.
pub fn open(secret: &SecretString, sealed: &str) -> Option<String> {
    open_labelled(JOB_PAYLOAD_LABEL, secret, sealed)
}

/// Seals a webhook signing secret for storage (see the module doc).
pub fn seal_webhook_secret(secret: &SecretString, plaintext: &str) -> String {
    seal_labelled(WEBHOOK_SECRET_LABEL, secret, plaintext)
}

/// Opens what [`seal_webhook_secret`] made.
pub fn open_webhook_secret(secret: &SecretString, sealed: &str) -> Option<String> {
    open_labelled(WEBHOOK_SECRET_LABEL, secret, sealed)
}

fn seal_labelled(label: &[u8], secret: &SecretString, plaintext: &str) -> String {
    let cipher = ChaCha20Poly1305::new(&seal_key(label, secret));
    let nonce_bytes = rand::random::<[u8; 12]>();
    let ct = cipher
        .encrypt(&Nonce::from(nonce_bytes), plaintext.as_bytes())
        .expect("encrypting a short string cannot fail");
    let mut out = nonce_bytes.to_vec();
    out.extend_from_slice(&ct);
    URL_SAFE_NO_PAD.encode(out)
}

fn open_labelled(label: &[u8], secret: &SecretString, sealed: &str) -> Option<String> {
    let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
    if raw.len() < 12 {
        return None;
    }
    let (nonce, ct) = raw.split_at(12);
    let cipher = ChaCha20Poly1305::new(&seal_key(label, secret));
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    let pt = cipher.decrypt(&Nonce::from(nonce), ct).ok()?;
    String::from_utf8(pt).ok()
}

/// Key-derivation label of the browser forms' anti-forgery tokens.
const FORM_TOKEN_LABEL: &[u8] = b"comet/form-token/v1:";

/// An anti-forgery token for a browser form: HMAC-SHA256 (under a key derived from
/// `JWT_SECRET` with its own label) of the browser's cookie nonce and what the form acts on
/// (`bound_to`, e.g. an invitation token's hash), hex. A form posted without the cookie, with
/// another browser's cookie, or for another invitation does not match.
pub fn form_token(secret: &SecretString, nonce: &str, bound_to: &str) -> String {
    use hmac::{Hmac, Mac};
    let key = seal_key(FORM_TOKEN_LABEL, secret);
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(&key[..]).expect("HMAC takes a key of any length");
    mac.update(nonce.as_bytes());
    mac.update(b"\n");
    mac.update(bound_to.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `presented` is the [`form_token`] of `nonce` and `bound_to` (compared in constant
/// time).
pub fn form_token_matches(
    secret: &SecretString,
    nonce: &str,
    bound_to: &str,
    presented: &str,
) -> bool {
    use subtle::ConstantTimeEq;
    let expected = form_token(secret, nonce, bound_to);
    expected.len() == presented.len() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// Hashes a password with Argon2id (PHC string).
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks a password against its PHC hash.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when no user matched, so a login takes as long either way.
pub fn dummy_password_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not-a-real-password").expect("hash"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_random_bytes_and_their_hash_is_stable() {
        let t = new_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), 32);
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t), token_hash(&t));
        assert_eq!(token_hash(&t).len(), 64);
    }

    #[test]
    fn a_sealed_token_opens_only_under_the_same_key_and_untampered() {
        let k: SecretString = "0123456789abcdef0123456789abcdef".into();
        let other: SecretString = "fedcba9876543210fedcba9876543210".into();
        let sealed = seal(&k, "tok");
        assert_eq!(open(&k, &sealed).as_deref(), Some("tok"));
        assert_eq!(open(&other, &sealed), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(open(&k, &URL_SAFE_NO_PAD.encode(bytes)), None);
    }

    #[test]
    fn a_sealed_webhook_secret_does_not_open_as_a_job_payload_or_the_reverse() {
        let k: SecretString = "0123456789abcdef0123456789abcdef".into();
        let sealed = seal_webhook_secret(&k, "whsec_abc");
        assert_eq!(
            open_webhook_secret(&k, &sealed).as_deref(),
            Some("whsec_abc")
        );
        assert_eq!(open(&k, &sealed), None);
        assert_eq!(open_webhook_secret(&k, &seal(&k, "tok")), None);
    }

    #[test]
    fn a_form_token_matches_only_its_nonce_and_binding() {
        let k: SecretString = "0123456789abcdef0123456789abcdef".into();
        let t = form_token(&k, "nonce-1", "invitation-a");
        assert!(form_token_matches(&k, "nonce-1", "invitation-a", &t));
        assert!(!form_token_matches(&k, "nonce-2", "invitation-a", &t));
        assert!(!form_token_matches(&k, "nonce-1", "invitation-b", &t));
        assert!(!form_token_matches(&k, "nonce-1", "invitation-a", &t[1..]));
        let other: SecretString = "fedcba9876543210fedcba9876543210".into();
        assert!(!form_token_matches(&other, "nonce-1", "invitation-a", &t));
    }

    #[test]
    fn passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
