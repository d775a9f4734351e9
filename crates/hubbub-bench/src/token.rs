//! The publisher token the bench mints when given a key instead of a token.

use std::time::Duration;

use hubbub_proto::token::{TokenError, mint_mercure};

/// Mints an HS256 publisher token for every topic, valid for a day.
pub fn mint_token(key: &str) -> Result<String, TokenError> {
    mint_mercure(
        key,
        serde_json::json!({ "publish": ["*"] }),
        Some(Duration::from_secs(86_400)),
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
