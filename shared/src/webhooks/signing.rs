//! Standard Webhooks 1.0 signatures: the `whsec_<base64>` secret format and the three headers
//! a delivery carries.
//!
//! `webhook-signature` is `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, where the
//! key is the base64-decoded part of the secret; during a rotation's grace period the current
//! and the previous secret each sign, and the header holds both signatures, space-separated (a
//! receiver accepts the message when any one verifies).

use std::fmt;

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

use crate::domain::Invalid;

/// The prefix of a secret's text form.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of a generated key (the spec asks for 24 to 64).
const KEY_BYTES: usize = 32;
/// Shortest and longest key accepted from a stored secret.
const KEY_RANGE: std::ops::RangeInclusive<usize> = 24..=64;

/// A signing secret: the HMAC key. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct SigningSecret(SecretSlice<u8>);

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret(…)")
    }
}

impl SigningSecret {
    /// A new random secret (32 bytes from the OS CSPRNG).
    pub fn generate() -> Self {
        Self(rand::random::<[u8; KEY_BYTES]>().to_vec().into())
    }

    /// Reads `whsec_<base64>` (24 to 64 key bytes).
    pub fn parse(text: &str) -> Result<Self, Invalid> {
        let b64 = text
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| Invalid::new("must start with `whsec_`"))?;
        let key = STANDARD
            .decode(b64)
            .map_err(|_| Invalid::new("must be `whsec_` and base64"))?;
        if !KEY_RANGE.contains(&key.len()) {
            return Err(Invalid::new("must hold 24 to 64 key bytes"));
        }
        Ok(Self(key.into()))
    }

    /// The text form, `whsec_<base64>`: what is sealed for storage and shown once.
    pub fn to_text(&self) -> SecretString {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(self.0.expose_secret())).into()
    }

    /// Its text form, to show once, and that text sealed under `key` (from `JWT_SECRET`), to
    /// store ([`crate::secrets::seal_webhook_secret`]).
    pub fn text_and_sealed(&self, key: &SecretString) -> (String, String) {
        let text = self.to_text();
        let sealed = crate::secrets::seal_webhook_secret(key, text.expose_secret());
        (text.expose_secret().to_owned(), sealed)
    }

    /// `v1,<base64 signature>` of one message under this secret.
    fn signature(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .expect("HMAC takes a key of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// The value of `webhook-signature`: one `v1,…` signature per secret, space-separated, in the
/// order given (current secret first).
pub fn sign(msg_id: &str, timestamp: i64, body: &[u8], secrets: &[SigningSecret]) -> String {
    secrets
        .iter()
        .map(|s| s.signature(msg_id, timestamp, body))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The three headers of a signed delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `webhook-id`: the message id, the same for every retry of one message.
    pub id: String,
    /// `webhook-timestamp`: Unix seconds of this attempt.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
}

impl SignedHeaders {
    /// Signs `body` as message `msg_id` at `timestamp` (Unix seconds) with every secret.
    pub fn new(msg_id: &str, timestamp: i64, body: &[u8], secrets: &[SigningSecret]) -> Self {
        Self {
            id: msg_id.to_owned(),
            timestamp: timestamp.to_string(),
            signature: sign(msg_id, timestamp, body, secrets),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_secret_reads_back_from_its_text_form() {
        let s = SigningSecret::generate();
        let text = s.to_text();
        assert!(text.expose_secret().starts_with("whsec_"));
        let back = SigningSecret::parse(text.expose_secret()).unwrap();
        assert_eq!(sign("m", 1, b"x", &[s]), sign("m", 1, b"x", &[back]));
        assert_eq!(
            format!("{:?}", SigningSecret::generate()),
            "SigningSecret(…)"
        );
    }

    /// The example of the Standard Webhooks reference libraries
    /// (standard-webhooks/standard-webhooks, `libraries/go/webhook_test.go`, `TestWebhookSign`):
    /// reproducing it is what says a receiver's library accepts Comet's signatures.
    #[test]
    fn the_specifications_example_vector_is_reproduced() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            sign(
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#,
                &[secret]
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in ["", "whsec_", "abc", "whsec_!!!", "whsec_AAAA"] {
            assert!(SigningSecret::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn two_secrets_give_two_space_separated_signatures() {
        let (a, b) = (SigningSecret::generate(), SigningSecret::generate());
        let both = sign("msg_1", 10, b"{}", &[a.clone(), b.clone()]);
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], sign("msg_1", 10, b"{}", &[a]));
        assert_eq!(parts[1], sign("msg_1", 10, b"{}", &[b]));
    }
}
