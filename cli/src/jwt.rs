//! HS256 JSON Web Tokens for the local gateway and `eventfold token`.
//!
//! In AWS the HTTP API's JWT authorizer checks tokens; locally this module does the same
//! checks (signature, expiry, issuer, audience) with a shared dev secret.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::HashMap;

/// The documented development secret (override with `EVENTFOLD_JWT_SECRET`).
pub const DEV_SECRET: &str = "eventfold-dev-secret-change-me";
/// Issuer of local tokens.
pub const LOCAL_ISSUER: &str = "eventfold-local";
/// Audience of local tokens.
pub const LOCAL_AUDIENCE: &str = "eventfold";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON.
    #[error("malformed token")]
    Malformed,
    /// Not HS256.
    #[error("unsupported algorithm")]
    Algorithm,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// `exp` is missing or past.
    #[error("token expired")]
    Expired,
    /// `iss` or `aud` is not ours.
    #[error("wrong issuer or audience")]
    Audience,
}

/// The secret in force: `EVENTFOLD_JWT_SECRET` or the dev default.
pub fn secret() -> String {
    std::env::var("EVENTFOLD_JWT_SECRET").unwrap_or_else(|_| DEV_SECRET.to_owned())
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC takes keys of any length, so this cannot fail.
    Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
}

/// Signs a token for `tenant`/`sub` with `scope`, valid for `ttl_secs`.
pub fn issue(secret: &str, tenant: &str, sub: &str, scope: &str, ttl_secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let claims = URL_SAFE_NO_PAD.encode(
        json!({
            "iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "sub": sub, "tenant": tenant,
            "scope": scope, "iat": now, "exp": now + ttl_secs,
        })
        .to_string(),
    );
    let signing_input = format!("{header}.{claims}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies a token and returns its claims as API Gateway passes them: every value a string.
pub fn verify(secret: &str, token: &str) -> Result<HashMap<String, String>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let decode = |p: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtError::Malformed)?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
    };
    let header = decode(h)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Algorithm);
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
    let mut m = mac(secret);
    m.update(format!("{h}.{c}").as_bytes());
    m.verify_slice(&sig).map_err(|_| JwtError::Signature)?;
    let claims = decode(c)?;
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or(JwtError::Expired)?;
    if exp <= chrono::Utc::now().timestamp() {
        return Err(JwtError::Expired);
    }
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == LOCAL_AUDIENCE,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(LOCAL_AUDIENCE)),
        _ => false,
    };
    if claims.get("iss").and_then(Value::as_str) != Some(LOCAL_ISSUER) || !aud_ok {
        return Err(JwtError::Audience);
    }
    let Value::Object(map) = claims else {
        return Err(JwtError::Malformed);
    };
    Ok(map
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, text)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_tampering_fails() {
        let t = issue("s3cret", "acme", "alice", "events:read", 60);
        let claims = verify("s3cret", &t).expect("valid");
        assert_eq!(claims["tenant"], "acme");
        assert_eq!(claims["sub"], "alice");
        assert_eq!(verify("other", &t), Err(JwtError::Signature));
        let expired = issue("s3cret", "acme", "alice", "x", -1);
        assert_eq!(verify("s3cret", &expired), Err(JwtError::Expired));
        assert_eq!(verify("s3cret", "a.b"), Err(JwtError::Malformed));
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory","tenant":"acme","exp":9999999999,"iss":"eventfold-local","aud":"eventfold"}"#);
        parts[1] = &forged;
        assert_eq!(verify("s3cret", &parts.join(".")), Err(JwtError::Signature));
    }
}
