//! The gateway's JWT authorizer against tokens built here: the dev HS256 secret, and RS256 /
//! ES256 with the committed test key pairs and JWKS in `tests/fixtures/` (test-only keys).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use eventfold_local::jwt::{
    self, DEV_SECRET, ISSUER_ENV, JWKS_FILE_ENV, JwtConfig, JwtError, LEEWAY_SECS, LOCAL_AUDIENCE,
    LOCAL_ISSUER,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Claims a local token carries, valid for a minute.
fn claims() -> Value {
    json!({
        "iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE, "sub": "alice", "tenant": "acme",
        "scope": "events:read", "iat": now(), "exp": now() + 60,
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().map(|m| m.remove(key));
    } else {
        claims[key] = value;
    }
    claims
}

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signs")
}

fn signed(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).expect("signs")
}

fn rsa_key(file: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(fixture(file)).expect("fixture")).expect("RSA key")
}

fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).expect("fixture"))
        .expect("EC key")
}

/// The dev secret plus the fixture JWKS, configured as `eventfold local` reads it.
fn with_jwks() -> JwtConfig {
    let file = fixture("jwks.json").display().to_string();
    JwtConfig::from_lookup(|k| (k == JWKS_FILE_ENV).then(|| file.clone())).expect("configures")
}

#[test]
fn valid_hs256_dev_tokens_pass_with_their_claims_as_strings() {
    let config = JwtConfig::dev();
    let token = jwt::issue(DEV_SECRET, "acme", "alice", "events:read events:write", 60);
    let claims = config.verify(&token).expect("valid");
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["scope"], "events:read events:write");
    assert_eq!(claims["iss"], LOCAL_ISSUER);
    assert!(claims["exp"].parse::<i64>().is_ok_and(|e| e > now()));
    let custom = hs256(DEV_SECRET, &with(claims_with_list(), "n", json!(5)));
    let claims = config.verify(&custom).expect("valid");
    assert_eq!(claims["n"], "5");
    assert_eq!(claims["roles"], r#"["a","b"]"#);
}

fn claims_with_list() -> Value {
    with(claims(), "roles", json!(["a", "b"]))
}

#[test]
fn expiry_is_checked_with_the_documented_leeway() {
    let config = JwtConfig::dev();
    let leeway = LEEWAY_SECS as i64;
    let expired = hs256(
        DEV_SECRET,
        &with(claims(), "exp", json!(now() - leeway - 30)),
    );
    assert_eq!(config.verify(&expired), Err(JwtError::Expired));
    let skewed = hs256(
        DEV_SECRET,
        &with(claims(), "exp", json!(now() - leeway / 2)),
    );
    assert!(config.verify(&skewed).is_ok(), "within the leeway");
    let no_exp = hs256(DEV_SECRET, &with(claims(), "exp", Value::Null));
    assert_eq!(
        config.verify(&no_exp),
        Err(JwtError::MissingClaim("exp".into()))
    );
    assert_eq!(
        config.verify(&jwt::issue(DEV_SECRET, "acme", "x", "s", -leeway - 60)),
        Err(JwtError::Expired)
    );
}

#[test]
fn tokens_not_yet_valid_are_refused() {
    let config = JwtConfig::dev();
    let leeway = LEEWAY_SECS as i64;
    let early = hs256(
        DEV_SECRET,
        &with(claims(), "nbf", json!(now() + leeway + 60)),
    );
    assert_eq!(config.verify(&early), Err(JwtError::NotYetValid));
    let skewed = hs256(
        DEV_SECRET,
        &with(claims(), "nbf", json!(now() + leeway / 2)),
    );
    assert!(config.verify(&skewed).is_ok(), "within the leeway");
    let future_iat = hs256(
        DEV_SECRET,
        &with(claims(), "iat", json!(now() + leeway + 60)),
    );
    assert_eq!(config.verify(&future_iat), Err(JwtError::NotYetValid));
}

#[test]
fn issuer_and_audience_must_be_ours() {
    let config = JwtConfig::dev();
    let wrong_iss = hs256(DEV_SECRET, &with(claims(), "iss", json!("someone-else")));
    assert_eq!(config.verify(&wrong_iss), Err(JwtError::Issuer));
    let no_iss = hs256(DEV_SECRET, &with(claims(), "iss", Value::Null));
    assert_eq!(
        config.verify(&no_iss),
        Err(JwtError::MissingClaim("iss".into()))
    );
    let wrong_aud = hs256(DEV_SECRET, &with(claims(), "aud", json!("other-api")));
    assert_eq!(config.verify(&wrong_aud), Err(JwtError::Audience));
    let no_aud = hs256(DEV_SECRET, &with(claims(), "aud", Value::Null));
    assert_eq!(
        config.verify(&no_aud),
        Err(JwtError::MissingClaim("aud".into()))
    );
    let listed = hs256(
        DEV_SECRET,
        &with(claims(), "aud", json!(["other-api", LOCAL_AUDIENCE])),
    );
    assert!(
        config.verify(&listed).is_ok(),
        "one of the audiences is ours"
    );
}

#[test]
fn the_issuer_and_audience_can_be_configured() {
    let config = JwtConfig::from_lookup(|k| match k {
        ISSUER_ENV => Some("https://idp.example, eventfold-local".into()),
        jwt::AUDIENCE_ENV => Some("shop-api".into()),
        _ => None,
    })
    .expect("configures");
    assert_eq!(config.issuers, ["https://idp.example", "eventfold-local"]);
    let idp = with(
        with(claims(), "iss", json!("https://idp.example")),
        "aud",
        json!("shop-api"),
    );
    assert!(config.verify(&hs256(DEV_SECRET, &idp)).is_ok());
    assert_eq!(
        config.verify(&hs256(DEV_SECRET, &claims())),
        Err(JwtError::Audience)
    );
    // Issued tokens carry the first issuer and audience, so they verify.
    let issued = config.issue("acme", "alice", "events:read", 60);
    let claims = config.verify(&issued).expect("valid");
    assert_eq!(claims["iss"], "https://idp.example");
    assert_eq!(claims["aud"], "shop-api");
}

#[test]
fn bad_signatures_are_refused() {
    let config = with_jwks();
    let forged = hs256("another-secret", &claims());
    assert_eq!(config.verify(&forged), Err(JwtError::Signature));
    // A valid token whose payload was swapped.
    let good = hs256(DEV_SECRET, &claims());
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(with(claims(), "tenant", json!("evil")).to_string());
    assert_eq!(config.verify(&parts.join(".")), Err(JwtError::Signature));
    // RS256 with a key the set does not hold, under a kid it does.
    let other = signed(
        Algorithm::RS256,
        "test-rsa",
        &rsa_key("rsa-other-private.pem"),
        &claims(),
    );
    assert_eq!(config.verify(&other), Err(JwtError::Signature));
    assert_eq!(config.verify("a.b"), Err(JwtError::Malformed));
    assert_eq!(config.verify("not a token"), Err(JwtError::Malformed));
}

#[test]
fn alg_none_and_algorithm_mismatches_are_refused() {
    let config = with_jwks();
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    assert_eq!(
        config.verify(&format!("{header}.{payload}.")),
        Err(JwtError::Algorithm)
    );
    // HMAC other than HS256 with the dev secret.
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims(),
        &EncodingKey::from_secret(DEV_SECRET.as_bytes()),
    )
    .expect("signs");
    assert_eq!(config.verify(&hs512), Err(JwtError::Algorithm));
    // An RSA key used for ES256, an EC key for RS256.
    let es_on_rsa = signed(Algorithm::ES256, "test-rsa", &ec_key(), &claims());
    assert_eq!(config.verify(&es_on_rsa), Err(JwtError::Algorithm));
    let rs_on_ec = signed(
        Algorithm::RS256,
        "test-ec",
        &rsa_key("rsa-private.pem"),
        &claims(),
    );
    assert_eq!(config.verify(&rs_on_ec), Err(JwtError::Algorithm));
    // The key declares RS256; an RS512 signature by the same key is still refused.
    let rs512 = signed(
        Algorithm::RS512,
        "test-rsa",
        &rsa_key("rsa-private.pem"),
        &claims(),
    );
    assert_eq!(config.verify(&rs512), Err(JwtError::Algorithm));
    // The HS256/RSA confusion: the public key as HMAC secret proves nothing.
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("jwks.json")).expect("jwks"))
            .expect("json");
    let n = jwks["keys"][0]["n"].as_str().expect("n");
    let mut confused = Header::new(Algorithm::HS256);
    confused.kid = Some("test-rsa".into());
    let token = jsonwebtoken::encode(
        &confused,
        &claims(),
        &EncodingKey::from_secret(n.as_bytes()),
    )
    .expect("signs");
    assert_eq!(config.verify(&token), Err(JwtError::Signature));
    // Without a key set, asymmetric tokens have no key at all.
    let rs256 = signed(
        Algorithm::RS256,
        "test-rsa",
        &rsa_key("rsa-private.pem"),
        &claims(),
    );
    assert_eq!(JwtConfig::dev().verify(&rs256), Err(JwtError::Algorithm));
}

#[test]
fn rs256_and_es256_tokens_verify_with_the_jwks_file() {
    let config = with_jwks();
    let rs256 = signed(
        Algorithm::RS256,
        "test-rsa",
        &rsa_key("rsa-private.pem"),
        &claims(),
    );
    let claims_rs = config.verify(&rs256).expect("RS256 via JWKS");
    assert_eq!(claims_rs["tenant"], "acme");
    let es256 = signed(Algorithm::ES256, "test-ec", &ec_key(), &claims());
    let claims_es = config.verify(&es256).expect("ES256 via JWKS");
    assert_eq!(claims_es["sub"], "alice");
    // Claims are checked for these too.
    let expired = signed(
        Algorithm::ES256,
        "test-ec",
        &ec_key(),
        &with(claims(), "exp", json!(now() - 3600)),
    );
    assert_eq!(config.verify(&expired), Err(JwtError::Expired));
    // The key is chosen by kid: unknown, missing, or meant for encryption.
    let unknown = signed(Algorithm::ES256, "nope", &ec_key(), &claims());
    assert_eq!(config.verify(&unknown), Err(JwtError::UnknownKey));
    let no_kid =
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims(), &ec_key()).expect("signs");
    assert_eq!(config.verify(&no_kid), Err(JwtError::UnknownKey));
    let enc = signed(
        Algorithm::RS256,
        "test-rsa-enc",
        &rsa_key("rsa-private.pem"),
        &claims(),
    );
    assert_eq!(config.verify(&enc), Err(JwtError::UnknownKey));
    // The dev secret keeps working next to the key set.
    assert!(
        config
            .verify(&jwt::issue(DEV_SECRET, "acme", "alice", "events:read", 60))
            .is_ok()
    );
}

#[test]
fn a_missing_or_broken_jwks_file_fails_the_configuration() {
    let missing = JwtConfig::from_lookup(|k| (k == JWKS_FILE_ENV).then(|| "/nonexistent".into()));
    assert!(missing.is_err());
    let not_jwks = fixture("README.md").display().to_string();
    let broken = JwtConfig::from_lookup(|k| (k == JWKS_FILE_ENV).then(|| not_jwks.clone()));
    let err = broken.expect_err("fails");
    assert!(
        format!("{err:#}").contains("not a JWKS document"),
        "{err:#}"
    );
}
