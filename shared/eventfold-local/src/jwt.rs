//! The local gateway's JWT authorizer, and the HS256 dev tokens `eventfold token` prints.
//!
//! In AWS the HTTP API's JWT authorizer checks every token; locally [`JwtConfig::verify`]
//! makes the same checks with `jsonwebtoken`: the signature, `exp` (required), `nbf` and
//! `iat` when present, `iss` and `aud` (both required), with a leeway of
//! [`LEEWAY_SECS`] seconds for clock skew. Two kinds of key:
//!
//! - HS256 with a shared secret (`EVENTFOLD_JWT_SECRET`, default [`DEV_SECRET`]): the dev
//!   tokens. No other HMAC algorithm is accepted.
//! - RS256/RS384/RS512, PS256/PS384/PS512, ES256/ES384 and EdDSA with the public keys of a
//!   JWKS file (`EVENTFOLD_JWKS_FILE`), chosen by the token's `kid`, so an identity
//!   provider's tokens work locally too. A key whose `alg`, curve or type does not fit the
//!   token's `alg` is refused, as is a key meant for encryption.
//!
//! Accepted issuers and audiences default to [`LOCAL_ISSUER`] and [`LOCAL_AUDIENCE`];
//! `EVENTFOLD_JWT_ISSUER` and `EVENTFOLD_JWT_AUDIENCE` replace them (comma-separated lists).
//! `alg: none` and unknown algorithms never verify.

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::path::Path;

/// The documented development secret (override with `EVENTFOLD_JWT_SECRET`).
pub const DEV_SECRET: &str = "eventfold-dev-secret-change-me";
/// Issuer of local tokens.
pub const LOCAL_ISSUER: &str = "eventfold-local";
/// Audience of local tokens.
pub const LOCAL_AUDIENCE: &str = "eventfold";
/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Environment variable holding the HS256 secret.
pub const SECRET_ENV: &str = "EVENTFOLD_JWT_SECRET";
/// Environment variable naming a JWKS file (public keys for RS/PS/ES/EdDSA tokens).
pub const JWKS_FILE_ENV: &str = "EVENTFOLD_JWKS_FILE";
/// Environment variable listing the accepted issuers (comma-separated).
pub const ISSUER_ENV: &str = "EVENTFOLD_JWT_ISSUER";
/// Environment variable listing the accepted audiences (comma-separated).
pub const AUDIENCE_ENV: &str = "EVENTFOLD_JWT_AUDIENCE";

/// A token's claims as API Gateway passes them to the function
/// (`requestContext.authorizer.jwt.claims`): every value a string.
pub type Claims = HashMap<String, String>;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON, or a claim of the wrong type.
    #[error("malformed token")]
    Malformed,
    /// `none`, an unknown algorithm, one without a configured key, or one the key is not for.
    #[error("unsupported algorithm")]
    Algorithm,
    /// No key of the key set has the token's `kid` (or the token has none).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// `exp` is past.
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not an accepted issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` names no accepted audience.
    #[error("wrong audience")]
    Audience,
    /// A required claim (`exp`, `iss`, `aud`) is missing.
    #[error("missing claim {0}")]
    MissingClaim(String),
}

impl From<jsonwebtoken::errors::Error> for JwtError {
    fn from(e: jsonwebtoken::errors::Error) -> Self {
        match e.kind() {
            ErrorKind::InvalidSignature => Self::Signature,
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::MissingRequiredClaim(c) => Self::MissingClaim(c.clone()),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Self::Algorithm,
            ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => Self::UnknownKey,
            _ => Self::Malformed,
        }
    }
}

/// What the authorizer accepts.
#[derive(Clone)]
pub struct JwtConfig {
    secret: String,
    jwks: Option<JwkSet>,
    /// Accepted `iss` values; the first is the issuer of [`JwtConfig::issue`]d tokens.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; the first is the audience of issued tokens.
    pub audiences: Vec<String>,
    /// Clock skew tolerated, seconds.
    pub leeway_secs: u64,
}

impl std::fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtConfig")
            .field("dev_secret", &(self.secret == DEV_SECRET))
            .field("jwks_keys", &self.jwks.as_ref().map_or(0, |s| s.keys.len()))
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

fn list(value: Option<String>, default: &str) -> Vec<String> {
    let items: Vec<String> = value
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if items.is_empty() {
        vec![default.to_owned()]
    } else {
        items
    }
}

/// The HS256 secret in force: `EVENTFOLD_JWT_SECRET` or the dev default.
pub fn secret() -> String {
    std::env::var(SECRET_ENV).unwrap_or_else(|_| DEV_SECRET.to_owned())
}

/// Signs a dev token (HS256, issuer [`LOCAL_ISSUER`], audience [`LOCAL_AUDIENCE`]) for
/// `tenant`/`sub` with `scope`, valid for `ttl_secs` (negative: already expired).
pub fn issue(secret: &str, tenant: &str, sub: &str, scope: &str, ttl_secs: i64) -> String {
    JwtConfig::with_secret(secret).issue(tenant, sub, scope, ttl_secs)
}

/// Reads a JWKS document (`{"keys": [...]}`).
pub fn load_jwks(path: &Path) -> Result<JwkSet> {
    let raw =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&raw).with_context(|| format!("{} is not a JWKS document", path.display()))
}

impl JwtConfig {
    /// The dev secret, local issuer and audience, no key set.
    pub fn dev() -> Self {
        Self::with_secret(DEV_SECRET)
    }

    /// Like [`JwtConfig::dev`] with another HS256 secret.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        Self {
            secret: secret.into(),
            jwks: None,
            issuers: vec![LOCAL_ISSUER.to_owned()],
            audiences: vec![LOCAL_AUDIENCE.to_owned()],
            leeway_secs: LEEWAY_SECS,
        }
    }

    /// Also accepts tokens signed by the keys of `jwks`.
    pub fn with_jwks(mut self, jwks: JwkSet) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// From the environment (see the module doc); fails when the JWKS file cannot be read.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// From variables looked up by name (see the module doc).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut config = Self::with_secret(lookup(SECRET_ENV).unwrap_or_else(|| DEV_SECRET.into()));
        config.issuers = list(lookup(ISSUER_ENV), LOCAL_ISSUER);
        config.audiences = list(lookup(AUDIENCE_ENV), LOCAL_AUDIENCE);
        if let Some(file) = lookup(JWKS_FILE_ENV) {
            let jwks = load_jwks(Path::new(&file))
                .with_context(|| format!("loading the key set {JWKS_FILE_ENV} names"))?;
            config = config.with_jwks(jwks);
        }
        Ok(config)
    }

    /// Signs an HS256 token with the secret, the first issuer and the first audience.
    pub fn issue(&self, tenant: &str, sub: &str, scope: &str, ttl_secs: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims = json!({
            "iss": self.issuers.first().map_or(LOCAL_ISSUER, String::as_str),
            "aud": self.audiences.first().map_or(LOCAL_AUDIENCE, String::as_str),
            "sub": sub, "tenant": tenant, "scope": scope,
            "iat": now, "exp": now + ttl_secs,
        });
        let key = EncodingKey::from_secret(self.secret.as_bytes());
        // HMAC takes any key and a JSON object always serializes, so signing cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
            .unwrap_or_else(|e| unreachable!("HS256 signing failed: {e}"))
    }

    /// The key that may verify a token with `header`.
    fn key_for(&self, header: &Header) -> Result<DecodingKey, JwtError> {
        match header.alg {
            Algorithm::HS256 => return Ok(DecodingKey::from_secret(self.secret.as_bytes())),
            Algorithm::HS384 | Algorithm::HS512 => return Err(JwtError::Algorithm),
            _ => {}
        }
        let jwks = self.jwks.as_ref().ok_or(JwtError::Algorithm)?;
        let kid = header.kid.as_deref().ok_or(JwtError::UnknownKey)?;
        let jwk = jwks.find(kid).ok_or(JwtError::UnknownKey)?;
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            return Err(JwtError::UnknownKey);
        }
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != format!("{:?}", header.alg)
        {
            return Err(JwtError::Algorithm);
        }
        let fits = match (&jwk.algorithm, header.alg) {
            (AlgorithmParameters::RSA(_), a) => matches!(
                a,
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ),
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => {
                p.curve == EllipticCurve::P256
            }
            (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => {
                p.curve == EllipticCurve::P384
            }
            (AlgorithmParameters::OctetKeyPair(_), Algorithm::EdDSA) => true,
            // Symmetric keys in the set are never used: HS256 is the dev secret's alone.
            _ => false,
        };
        if !fits {
            return Err(JwtError::Algorithm);
        }
        DecodingKey::from_jwk(jwk).map_err(|_| JwtError::UnknownKey)
    }

    /// Verifies a token and returns its [`Claims`].
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| header_error(token))?;
        let key = self.key_for(&header)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_secs;
        validation.validate_nbf = true;
        validation.set_issuer(&self.issuers);
        validation.set_audience(&self.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)?.claims;
        // API Gateway also refuses tokens issued in the future; jsonwebtoken does not look.
        let now = jsonwebtoken::get_current_timestamp();
        match claims.get("iat") {
            None => {}
            Some(iat) => match iat.as_f64() {
                Some(t) if t <= (now + self.leeway_secs) as f64 => {}
                Some(_) => return Err(JwtError::NotYetValid),
                None => return Err(JwtError::Malformed),
            },
        }
        Ok(claims
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
}

/// Tells a header naming an algorithm we do not know (`none` included) from a broken one.
fn header_error(token: &str) -> JwtError {
    let header = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    match header {
        Some(h) if h.get("alg").is_some() => JwtError::Algorithm,
        _ => JwtError::Malformed,
    }
}
