//! Reading (not verifying) the claims a client needs from its own JWT.

use base64::Engine as _;
use serde::Deserialize;

/// The claims the client looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct PeekedClaims {
    /// User id.
    #[serde(default)]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch.
    #[serde(default)]
    pub exp: Option<u64>,
}

/// Decodes the payload of a JWT without checking its signature (the server does that).
/// Returns default claims for anything that is not a readable JWT.
pub fn peek_claims(token: &str) -> PeekedClaims {
    let Some(payload) = token.split('.').nth(1) else {
        return PeekedClaims::default();
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sub_and_exp() {
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"david","exp":1700000000,"channels":["a"]}"#);
        let claims = peek_claims(&format!("xx.{body}.sig"));
        assert_eq!(claims.sub.as_deref(), Some("david"));
        assert_eq!(claims.exp, Some(1_700_000_000));
        assert_eq!(peek_claims("not a jwt"), PeekedClaims::default());
    }
}
