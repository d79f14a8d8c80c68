//! Connection tokens: HS256 JWTs carrying the user id and channel permissions.

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tidings::protocol::{is_pattern, ErrorCode};

use crate::util::now_secs;

/// Claims of a Tidings connection token.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Claims {
    /// User id (required, non-empty).
    pub sub: String,
    /// Expiry, seconds since the Unix epoch; the token never expires when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Channels the user may subscribe to: exact names, or prefixes ending in `*`.
    #[serde(default)]
    pub channels: Vec<String>,
    /// Channels the user may publish into: exact names, or prefixes ending in `*`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Public user info attached to the user's publications as `publisher.info`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<serde_json::Value>,
}

impl Claims {
    /// Whether these claims allow subscribing to `name` (a channel or a pattern).
    pub fn can_subscribe(&self, name: &str) -> bool {
        allowed(&self.channels, name)
    }

    /// Whether these claims allow publishing into the concrete channel `channel`.
    pub fn can_publish(&self, channel: &str) -> bool {
        !is_pattern(channel) && allowed(&self.publish, channel)
    }
}

/// Whether a permission list allows `name`.
///
/// An exact entry allows only the identical name. An entry `p*` allows every channel
/// starting with `p`, and every pattern `q*` whose prefix `q` starts with `p`.
pub fn allowed(grants: &[String], name: &str) -> bool {
    let target = name.strip_suffix('*').unwrap_or(name);
    grants.iter().any(|grant| match grant.strip_suffix('*') {
        Some(prefix) => target.starts_with(prefix),
        None => grant == name,
    })
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Missing, malformed, wrongly signed or otherwise invalid token.
    #[error("invalid token: {0}")]
    Unauthorized(String),
    /// The token's `exp` has passed.
    #[error("token expired")]
    TokenExpired,
}

impl AuthError {
    /// The protocol error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unauthorized(_) => ErrorCode::Unauthorized,
            Self::TokenExpired => ErrorCode::TokenExpired,
        }
    }
}

fn validation() -> Validation {
    let mut validation = Validation::new(Algorithm::HS256);
    // `exp` is optional, but checked when present.
    validation.required_spec_claims.clear();
    validation.validate_exp = true;
    validation.leeway = 0;
    validation.validate_aud = false;
    validation
}

/// Verifies a token's signature and expiry and returns its claims.
pub fn verify(secret: &str, token: &str) -> Result<Claims, AuthError> {
    let key = DecodingKey::from_secret(secret.as_bytes());
    let claims = match jsonwebtoken::decode::<Claims>(token, &key, &validation()) {
        Ok(data) => data.claims,
        Err(err) => {
            return Err(match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::TokenExpired,
                ErrorKind::InvalidSignature => AuthError::Unauthorized("bad signature".into()),
                _ => AuthError::Unauthorized("malformed token".into()),
            })
        }
    };
    if claims.sub.is_empty() {
        return Err(AuthError::Unauthorized("missing sub".into()));
    }
    if let Some(exp) = claims.exp {
        // jsonwebtoken accepts `exp == now`; a token is expired at its `exp` second.
        if exp <= now_secs() {
            return Err(AuthError::TokenExpired);
        }
    }
    Ok(claims)
}

/// Mints an HS256 token for tests and development.
pub fn mint_token(secret: &str, claims: &Claims) -> String {
    let key = EncodingKey::from_secret(secret.as_bytes());
    // Serializing `Claims` into a JWT with an HMAC key cannot fail.
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: Option<u64>) -> Claims {
        Claims {
            sub: "alice".into(),
            exp,
            channels: vec!["chat:*".into(), "news".into()],
            publish: vec!["chat:*".into()],
            info: Some(serde_json::json!({"name": "Alice"})),
        }
    }

    #[test]
    fn valid_token_roundtrips() {
        let c = claims(Some(now_secs() + 60));
        let token = mint_token("s", &c);
        assert_eq!(verify("s", &token), Ok(c));
        let forever = claims(None);
        assert_eq!(verify("s", &mint_token("s", &forever)), Ok(forever));
    }

    #[test]
    fn expired_token_is_distinct() {
        let token = mint_token("s", &claims(Some(now_secs() - 10)));
        assert_eq!(verify("s", &token), Err(AuthError::TokenExpired));
        let token = mint_token("s", &claims(Some(now_secs())));
        assert_eq!(verify("s", &token), Err(AuthError::TokenExpired));
    }

    #[test]
    fn bad_signature_and_garbage_are_unauthorized() {
        let token = mint_token("other", &claims(None));
        assert_eq!(
            verify("s", &token).map_err(|e| e.code()),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(
            verify("s", "garbage").map_err(|e| e.code()),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(
            verify("s", "").map_err(|e| e.code()),
            Err(ErrorCode::Unauthorized)
        );
        let no_sub = Claims::default();
        assert_eq!(
            verify("s", &mint_token("s", &no_sub)).map_err(|e| e.code()),
            Err(ErrorCode::Unauthorized)
        );
    }

    #[test]
    fn permissions() {
        let c = claims(None);
        assert!(c.can_subscribe("chat:x"));
        assert!(c.can_subscribe("chat:room-*"));
        assert!(c.can_subscribe("chat:*"));
        assert!(!c.can_subscribe("chat*"));
        assert!(!c.can_subscribe("*"));
        assert!(c.can_subscribe("news"));
        assert!(!c.can_subscribe("news2"));
        assert!(!c.can_subscribe("news*"));
        assert!(!c.can_subscribe("other"));
        assert!(c.can_publish("chat:x"));
        assert!(!c.can_publish("chat:*"));
        assert!(!c.can_publish("news"));
        let all = Claims {
            sub: "root".into(),
            channels: vec!["*".into()],
            ..Claims::default()
        };
        assert!(all.can_subscribe("anything"));
        assert!(all.can_subscribe("*"));
    }
}
