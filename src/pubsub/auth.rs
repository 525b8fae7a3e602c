//! Who a pub/sub session is: with `--auth-secret`, the upgrade request carries `?token=JWT`
//! signed with HS256 under that secret; its `sub` is the session's user name, its `exp` (and
//! `nbf`), when present, are checked. Only HS256 is accepted (never `none`, never another
//! algorithm named in the token).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::protocol::check_user;

/// Why a token was refused (the reason goes into the HTTP 401 answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// The request has no `token` query parameter.
    Missing,
    /// Not three base64url parts of JSON.
    Malformed,
    /// The header names another algorithm than HS256.
    Algorithm,
    /// The signature does not match the secret.
    Signature,
    /// `exp` has passed.
    Expired,
    /// `nbf` has not come yet.
    NotYet,
    /// No `sub`, or one that breaks the user name rule.
    Subject,
}

impl TokenError {
    /// The message as a static string (for the handshake's refusal).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "a token is required: connect with ?token=JWT",
            Self::Malformed => "the token is not a well-formed JWT",
            Self::Algorithm => "the token must be signed with HS256",
            Self::Signature => "the token's signature is not valid",
            Self::Expired => "the token has expired",
            Self::NotYet => "the token is not valid yet",
            Self::Subject => "the token's sub must be a valid user name",
        }
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for TokenError {}

#[derive(Deserialize)]
struct Header<'a> {
    alg: &'a str,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
}

/// Checks tokens against one secret.
#[derive(Clone)]
pub struct Verifier {
    key: Hmac<Sha256>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(HS256)")
    }
}

impl Verifier {
    /// A verifier for tokens signed with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        Self {
            // HMAC takes keys of any length.
            key: Hmac::new_from_slice(secret)
                .unwrap_or_else(|_| unreachable!("HMAC keys have any length")),
        }
    }

    /// The user a valid `token` names, at `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now: f64) -> Result<String, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let header_json = decode(header)?;
        let h: Header<'_> =
            serde_json::from_slice(&header_json).map_err(|_| TokenError::Malformed)?;
        if h.alg != "HS256" {
            return Err(TokenError::Algorithm);
        }
        let mut mac = self.key.clone();
        mac.update(&token.as_bytes()[..header.len() + 1 + claims.len()]);
        // Constant-time comparison.
        mac.verify_slice(&decode(signature)?)
            .map_err(|_| TokenError::Signature)?;
        let c: Claims =
            serde_json::from_slice(&decode(claims)?).map_err(|_| TokenError::Malformed)?;
        if c.exp.is_some_and(|exp| now >= exp) {
            return Err(TokenError::Expired);
        }
        if c.nbf.is_some_and(|nbf| now < nbf) {
            return Err(TokenError::NotYet);
        }
        let sub = c.sub.ok_or(TokenError::Subject)?;
        check_user(&sub).map_err(|_| TokenError::Subject)?;
        Ok(sub)
    }

    /// Sign `claims` (a JSON object) as an HS256 token: for tests and tools.
    pub fn sign(&self, claims: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.as_bytes());
        let signed = format!("{header}.{body}");
        let mut mac = self.key.clone();
        mac.update(signed.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signed}.{signature}")
    }
}

/// The `token` query parameter of a request target (`/chat?token=...`). JWTs are base64url and
/// dots: they need no percent-decoding.
pub fn token_in(target: &str) -> Option<&str> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|kv| kv.strip_prefix("token="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_tokens_name_their_user() {
        let v = Verifier::new(b"secret");
        let t = v.sign(r#"{"sub":"ann","exp":2000}"#);
        assert_eq!(v.verify(&t, 1999.0), Ok("ann".to_string()));
        assert_eq!(v.verify(&t, 2000.0), Err(TokenError::Expired));
        let t = v.sign(r#"{"sub":"ann","nbf":100}"#);
        assert_eq!(v.verify(&t, 99.0), Err(TokenError::NotYet));
        assert_eq!(v.verify(&t, 100.0), Ok("ann".to_string()));
        let t = v.sign(r#"{"sub":"ann"}"#);
        assert_eq!(token_in(&format!("/x?a=1&token={t}")), Some(t.as_str()));
        assert_eq!(token_in("/x?a=1"), None);
    }

    #[test]
    fn the_rfc_7519_style_example_from_jwt_io_verifies() {
        // An HS256 token made elsewhere (jwt.io's example), so signing and verifying here are
        // not only checked against each other.
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
                     SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let v = Verifier::new(b"your-256-bit-secret");
        assert_eq!(v.verify(token, 1.7e9), Ok("1234567890".to_string()));
        assert_eq!(
            Verifier::new(b"another").verify(token, 1.7e9),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn forged_broken_and_foreign_tokens_are_refused() {
        let v = Verifier::new(b"secret");
        let other = Verifier::new(b"other secret");
        assert_eq!(
            v.verify(&other.sign(r#"{"sub":"ann"}"#), 0.0),
            Err(TokenError::Signature)
        );
        let t = v.sign(r#"{"sub":"ann"}"#);
        // The claims swapped for others under the same signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"root"}"#);
        parts[1] = &forged;
        assert_eq!(v.verify(&parts.join("."), 0.0), Err(TokenError::Signature));
        // alg "none" with an empty signature.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(br#"{"sub":"ann"}"#)
        );
        assert_eq!(v.verify(&none, 0.0), Err(TokenError::Algorithm));
        for bad in ["", "a.b", "a.b.c.d", "!!.??.**", &t[..t.len() - 3]] {
            assert!(v.verify(bad, 0.0).is_err(), "{bad}");
        }
        assert_eq!(
            v.verify(&v.sign(r#"{"exp":5}"#), 0.0),
            Err(TokenError::Subject)
        );
        assert_eq!(
            v.verify(&v.sign(r#"{"sub":"a\u0000b"}"#), 0.0),
            Err(TokenError::Subject)
        );
        assert_eq!(v.verify(&v.sign(r#"[1]"#), 0.0), Err(TokenError::Malformed));
    }
}
