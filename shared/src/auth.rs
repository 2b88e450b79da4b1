//! Access tokens: HS256 JWTs carrying the subject, its project and its permissions.
//!
//! A *platform token* (`platform: true`, minted by `comet-api token --platform`, never by a
//! login) belongs to a platform operator: it is bound to no project (its `projectId` is the nil
//! UUID, so project routes find nothing with it) and it is the only kind of token that can grant
//! a platform permission such as `projects:manage` ([`crate::permissions::is_platform_only`]).

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The claims of a Comet access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Claims {
    /// The subject (a user id, or a name for minted service tokens).
    pub sub: String,
    /// The project every request with this token is scoped to.
    pub project_id: Uuid,
    /// Granted permissions, e.g. `jobs:read`.
    pub permissions: Vec<String>,
    /// Unique token id (revocation targets it).
    pub jti: Uuid,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Issued at, in milliseconds (revocation markers compare against it).
    #[serde(default)]
    pub iat_ms: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
    /// A platform operator's token (see the module doc); absent in every other token.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub platform: bool,
}

impl Claims {
    /// New claims valid for `ttl_secs` from now on this host's clock, with a fresh `jti`. (A
    /// user's token is issued with [`Claims::issued_at`] on the shared clock instead: see
    /// `Sessions::now_ms`.)
    pub fn new(sub: &str, project_id: Uuid, permissions: Vec<String>, ttl_secs: i64) -> Self {
        Self::issued_at(
            sub,
            project_id,
            permissions,
            ttl_secs,
            Utc::now().timestamp_millis(),
        )
    }

    /// New claims issued at `now_ms` (ms since the epoch), valid for `ttl_secs`, with a fresh
    /// `jti`.
    pub fn issued_at(
        sub: &str,
        project_id: Uuid,
        permissions: Vec<String>,
        ttl_secs: i64,
        now_ms: i64,
    ) -> Self {
        let now = now_ms.div_euclid(1000);
        Self {
            sub: sub.to_owned(),
            project_id,
            permissions,
            jti: Uuid::new_v4(),
            iat: now,
            iat_ms: now_ms,
            exp: now + ttl_secs,
            platform: false,
        }
    }

    /// A platform operator's token (see the module doc) with these permissions.
    pub fn platform(sub: &str, permissions: Vec<String>, ttl_secs: i64) -> Self {
        Self {
            platform: true,
            ..Self::new(sub, Uuid::nil(), permissions, ttl_secs)
        }
    }

    /// Whether the token grants `permission`. A platform permission only ever comes with a
    /// platform token.
    pub fn has(&self, permission: &str) -> bool {
        if !self.platform && crate::permissions::is_platform_only(permission) {
            return false;
        }
        self.permissions.iter().any(|p| p == permission || p == "*")
    }
}

/// Signs claims with the HS256 secret.
pub fn mint(secret: &SecretString, claims: &Claims) -> Result<String, jsonwebtoken::errors::Error> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

/// Verifies signature, algorithm, expiry and not-before; returns the claims.
///
/// A token whose header lists critical extensions (`crit`) is refused: Comet understands none,
/// and RFC 7515 §4.1.11 requires refusing a token with a critical extension one does not
/// understand. (jsonwebtoken parses `crit` but does not enforce it, so it is checked here.)
pub fn verify(secret: &SecretString, token: &str) -> Result<Claims, jsonwebtoken::errors::Error> {
    use jsonwebtoken::errors::{Error, ErrorKind};
    let header = jsonwebtoken::decode_header(token)?;
    if header.crit.is_some() {
        return Err(Error::from(ErrorKind::InvalidToken));
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.validate_nbf = true;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(
        token,
        &DecodingKey::from_secret(secret.expose_secret().as_bytes()),
        &validation,
    )
    .map(|d| d.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretString {
        "0123456789abcdef0123456789abcdef".into()
    }

    #[test]
    fn a_minted_token_verifies_and_keeps_its_claims() {
        let c = Claims::new("ops", Uuid::now_v7(), vec!["jobs:read".into()], 60);
        let t = mint(&secret(), &c).unwrap();
        assert_eq!(verify(&secret(), &t).unwrap(), c);
    }

    #[test]
    fn only_a_platform_token_grants_a_platform_permission() {
        let all = vec!["*".to_owned(), "projects:manage".to_owned()];
        let project = Claims::new("ops", Uuid::now_v7(), all.clone(), 60);
        assert!(project.has("user:read"));
        assert!(
            !project.has("projects:manage"),
            "not even with `*` or by name"
        );
        let platform = Claims::platform("ops", vec!["projects:manage".into()], 60);
        assert!(platform.has("projects:manage"));
        assert!(!platform.has("user:read"));
        assert_eq!(platform.project_id, Uuid::nil());
        // the claim survives signing; an ordinary token does not carry it at all
        let t = mint(&secret(), &platform).unwrap();
        assert!(verify(&secret(), &t).unwrap().platform);
        let json = serde_json::to_value(&project).unwrap();
        assert!(json.get("platform").is_none(), "{json}");
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        #[derive(serde::Serialize)]
        struct WithNbf {
            #[serde(flatten)]
            claims: Claims,
            nbf: i64,
        }
        let claims = Claims::new("ops", Uuid::now_v7(), vec![], 3600);
        let soon = WithNbf {
            nbf: claims.iat + 600,
            claims: claims.clone(),
        };
        let key = EncodingKey::from_secret(secret().expose_secret().as_bytes());
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &soon, &key).unwrap();
        assert!(verify(&secret(), &t).is_err(), "nbf ten minutes ahead");
        let now = WithNbf {
            nbf: claims.iat,
            claims,
        };
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &now, &key).unwrap();
        assert!(verify(&secret(), &t).is_ok(), "nbf now");
    }

    #[test]
    fn a_token_with_a_critical_extension_is_refused() {
        let c = Claims::new("ops", Uuid::now_v7(), vec![], 60);
        let mut header = Header::new(Algorithm::HS256);
        header.crit = Some(vec!["exp-ext".into()]);
        let key = EncodingKey::from_secret(secret().expose_secret().as_bytes());
        let t = jsonwebtoken::encode(&header, &c, &key).unwrap();
        assert!(verify(&secret(), &t).is_err());
    }

    #[test]
    fn an_expired_or_foreign_token_is_refused() {
        let c = Claims::new("ops", Uuid::now_v7(), vec![], -60);
        assert!(verify(&secret(), &mint(&secret(), &c).unwrap()).is_err());
        let c = Claims::new("ops", Uuid::now_v7(), vec![], 60);
        let other: SecretString = "another-secret-another-secret-xx".into();
        assert!(verify(&secret(), &mint(&other, &c).unwrap()).is_err());
    }
}
