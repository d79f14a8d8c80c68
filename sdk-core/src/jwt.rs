//! Reading (not verifying) the claims a client needs from its own JWT.

use crate::json::{self, Value};

/// The claims the client looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeekedClaims {
    /// User id.
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch (a fraction is dropped).
    pub exp: Option<u64>,
}

/// Decodes the payload of a JWT without checking its signature (the server does that).
/// Returns default claims for anything that is not a readable JWT.
pub fn peek_claims(token: &str) -> PeekedClaims {
    let Some(bytes) = token.split('.').nth(1).and_then(base64url_decode) else {
        return PeekedClaims::default();
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return PeekedClaims::default();
    };
    let Ok(claims) = json::parse(&text) else {
        return PeekedClaims::default();
    };
    PeekedClaims {
        sub: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
        // Whole seconds; a fraction is dropped, an exponent or a negative number is not
        // read (the server decides; the client just does not schedule around it).
        exp: match claims.get("exp") {
            Some(Value::Number(n)) if !n.contains(['e', 'E']) => {
                Value::Number(n.split_once('.').map_or(*n, |(int, _)| int)).as_u64()
            }
            _ => None,
        },
    }
}

/// Base64url without padding (RFC 4648 §5), as JWTs use; trailing `=` are tolerated.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // A single leftover character cannot encode a byte.
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sub_and_exp() {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"david","exp":1700000000,"channels":["a"],"n":"é✓"}"#);
        let claims = peek_claims(&format!("xx.{body}.sig"));
        assert_eq!(claims.sub.as_deref(), Some("david"));
        assert_eq!(claims.exp, Some(1_700_000_000));
        assert_eq!(peek_claims("not a jwt"), PeekedClaims::default());
        assert_eq!(peek_claims("a.!!!.c"), PeekedClaims::default());
        assert_eq!(peek_claims("a.e30.c"), PeekedClaims::default()); // "{}"
        let exp = |value: &str| {
            let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(String::from(r#"{"sub":"d","exp":"#) + value + "}");
            peek_claims(&format!("x.{body}.s")).exp
        };
        assert_eq!(exp("1700000000"), Some(1_700_000_000));
        assert_eq!(exp("1700000000.75"), Some(1_700_000_000));
        assert_eq!(exp("1.9e9"), None, "an exponent is not misread as 1");
        assert_eq!(exp("1.9E9"), None);
        assert_eq!(exp("-5"), None);
    }

    #[test]
    fn base64url_matches_the_base64_crate() {
        use base64::Engine as _;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut rng = fastrand::Rng::with_seed(3);
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let text = engine.encode(&bytes);
            assert_eq!(base64url_decode(&text), Some(bytes), "{text}");
        }
        assert_eq!(base64url_decode("A"), None);
    }
}
