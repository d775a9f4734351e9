//! JWT minting for tests: HS* tokens with a `mercure` claim, with or without `exp`.

use serde_json::{Value, json};

/// An HS256 token whose only claim is `mercure` (e.g. `json!({"publish": ["*"]})`).
pub fn token(key: &str, mercure: Value) -> String {
    token_with_claims(key, json!({ "mercure": mercure }))
}

/// Like [`token`], with `exp` set `secs` from now (negative: already expired).
pub fn token_expiring_in(key: &str, mercure: Value, secs: i64) -> String {
    let exp = unix_now().saturating_add_signed(secs);
    token_with_claims(key, json!({ "mercure": mercure, "exp": exp }))
}

/// An HS256 token with exactly these claims.
pub fn token_with_claims(key: &str, claims: Value) -> String {
    token_with(key, "HS256", claims)
}

/// A token signed with an HMAC algorithm named as in JWT (`HS256`, `HS384`, `HS512`).
pub fn token_with(key: &str, alg: &str, claims: Value) -> String {
    hubbub_proto::token::mint_hmac(key, alg, &claims).expect("an HMAC algorithm and any key sign")
}

/// May publish on every topic.
pub fn publisher(key: &str) -> String {
    token(key, json!({ "publish": ["*"] }))
}

/// May receive private updates whose topics match `selectors`.
pub fn subscriber(key: &str, selectors: &[&str]) -> String {
    token(key, json!({ "subscribe": selectors }))
}

pub use hubbub_proto::token::unix_now;
