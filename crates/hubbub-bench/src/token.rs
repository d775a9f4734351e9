//! The publisher token the bench mints when given a key instead of a token.

use serde::Serialize;

use crate::payload;

/// Mints an HS256 publisher token for every topic, valid for a day.
pub fn mint_token(key: &str) -> Result<String, jsonwebtoken::errors::Error> {
    #[derive(Serialize)]
    struct Mercure {
        publish: [&'static str; 1],
    }
    #[derive(Serialize)]
    struct Claims {
        mercure: Mercure,
        exp: u64,
    }
    // Servers validating with library defaults insist on `exp`.
    let exp = payload::now_nanos() / 1_000_000_000 + 86_400;
    let claims = Claims {
        mercure: Mercure { publish: ["*"] },
        exp,
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(key.as_bytes())?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_token_verifies_with_the_key() {
        let token = mint_token("k").unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"k").unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(data.claims["mercure"]["publish"][0], "*");
    }
}
