//! Minting Mercure JWTs signed with an HMAC key, for hubbub's own clients: the
//! CLI's `publish`/`subscribe`, the dev banner, the bench and the tests. One
//! place, so they all sign the same way. Verifying is the hub's business
//! (`hubbub-server`'s `auth.rs`), not this module's.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("{0:?} is not an HMAC JWT algorithm (HS256, HS384, HS512)")]
    NotHmac(String),
    #[error("{0:?} is not a supported JWT algorithm")]
    Algorithm(String),
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs `claims` with `key` and an HMAC algorithm named as in JWT (`HS256`, ...).
pub fn mint_hmac(key: &str, alg: &str, claims: &Value) -> Result<String, TokenError> {
    let alg = Algorithm::from_str(alg)
        .ok()
        .filter(|a| matches!(a, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512))
        .ok_or_else(|| TokenError::NotHmac(alg.to_owned()))?;
    let key = EncodingKey::from_secret(key.as_bytes())?;
    Ok(jsonwebtoken::encode(&Header::new(alg), claims, &key)?)
}

/// An HS256 token whose claims are `mercure` (e.g. `{"publish": ["*"]}`) and, with
/// `valid_for`, an `exp` that far from now (hubs validating with library
/// defaults insist on one).
pub fn mint_mercure(
    key: &str,
    mercure: Value,
    valid_for: Option<Duration>,
) -> Result<String, TokenError> {
    let mut claims = json!({ "mercure": mercure });
    if let Some(valid_for) = valid_for {
        claims["exp"] = json!(unix_now().saturating_add(valid_for.as_secs()));
    }
    mint_hmac(key, "HS256", &claims)
}

/// The signing key for `alg`: an HS* secret, or a PEM private key
/// (PKCS#8 or the algorithm's own format) for RS*/PS*/ES*/EdDSA.
pub fn encoding_key(alg: Algorithm, key: &str) -> Result<EncodingKey, TokenError> {
    let pem = key.as_bytes();
    Ok(match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => EncodingKey::from_secret(pem)?,
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(pem)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem)?,
        _ => EncodingKey::from_rsa_pem(pem)?,
    })
}

/// A Mercure 1.0 access token (RFC 9068): header `{"alg": alg, "typ": "at+jwt"}`.
pub fn mint_access_token(alg: &str, key: &str, claims: &Value) -> Result<String, TokenError> {
    let alg = Algorithm::from_str(alg).map_err(|_| TokenError::Algorithm(alg.to_owned()))?;
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    mint_with_header(&header, key, claims)
}

/// A token with exactly this header (tests vary `typ`, `kid`, `jku`...).
pub fn mint_with_header(header: &Header, key: &str, claims: &Value) -> Result<String, TokenError> {
    let key = encoding_key(header.alg, key)?;
    Ok(jsonwebtoken::encode(header, claims, &key)?)
}

/// The claims RFC 9068 requires issuers to populate (`iss`, `aud`, `sub`,
/// `client_id`, `iat`, `exp` = now + `valid_for`, `jti`) and Mercure
/// `authorization_details` built from `(actions, topic matches)` pairs.
pub fn access_token_claims(
    iss: &str,
    aud: &str,
    grants: &[(&[&str], &[&str])],
    valid_for: Duration,
) -> Value {
    let now = unix_now();
    let details: Vec<Value> = grants
        .iter()
        .map(|(actions, topics)| {
            let topics: Vec<Value> = topics.iter().map(|t| json!({ "match": t })).collect();
            json!({
                "type": "https://mercure.rocks/authorization-detail",
                "actions": actions,
                "topics": topics,
            })
        })
        .collect();
    json!({
        "iss": iss,
        "aud": aud,
        "sub": "urn:hubbub:test",
        "client_id": iss,
        "iat": now,
        "exp": now.saturating_add(valid_for.as_secs()),
        "jti": format!("urn:hubbub:jti:{now}:{}", details.len()),
        "authorization_details": details,
    })
}

/// Seconds since 1970 (0 if the clock is set before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn decode(token: &str, key: &[u8], alg: Algorithm) -> Value {
        let mut v = Validation::new(alg);
        v.required_spec_claims.clear();
        v.validate_aud = false;
        jsonwebtoken::decode::<Value>(token, &DecodingKey::from_secret(key).unwrap(), &v)
            .expect("verifies with the key")
            .claims
    }

    #[test]
    fn minted_tokens_verify_with_the_key_and_carry_the_claims() {
        let t = mint_mercure(
            "k",
            json!({"publish": ["*"]}),
            Some(Duration::from_secs(60)),
        )
        .unwrap();
        let claims = decode(&t, b"k", Algorithm::HS256);
        assert_eq!(claims["mercure"]["publish"][0], "*");
        let exp = claims["exp"].as_u64().unwrap();
        assert!(exp >= unix_now() + 59 && exp <= unix_now() + 61);
        assert!(
            mint_mercure("k", json!({}), None)
                .map(|t| decode(&t, b"k", Algorithm::HS256)["exp"].is_null())
                .unwrap()
        );
        let t = mint_hmac("k", "HS512", &json!({"a": 1})).unwrap();
        assert_eq!(decode(&t, b"k", Algorithm::HS512)["a"], 1);
    }

    #[test]
    fn access_tokens_say_at_jwt() {
        let claims = access_token_claims(
            "https://i",
            "https://hub/.well-known/mercure",
            &[(&["publish"], &["*"])],
            Duration::from_secs(60),
        );
        let t = mint_access_token("HS256", "k", &claims).unwrap();
        assert_eq!(
            jsonwebtoken::decode_header(&t).unwrap().typ.as_deref(),
            Some("at+jwt")
        );
        let c = decode(&t, b"k", Algorithm::HS256);
        assert_eq!(c["authorization_details"][0]["topics"][0]["match"], "*");
        assert_eq!(c["iss"], "https://i");
        assert!(mint_access_token("none", "k", &claims).is_err());
    }

    #[test]
    fn only_hmac_algorithms_are_accepted() {
        for alg in ["RS256", "none", "EdDSA", "hs256"] {
            assert!(
                matches!(mint_hmac("k", alg, &json!({})), Err(TokenError::NotHmac(_))),
                "{alg}"
            );
        }
    }
}
