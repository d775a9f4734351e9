//! Mercure 1.0 (draft-dunglas-mercure-08) access tokens: RFC 9068 JWTs from
//! configured trusted issuers, validated per RFC 8725, whose grants are the
//! `authorization_details` (RFC 9396) of type
//! `https://mercure.rocks/authorization-detail`.
//!
//! A token is treated as 1.0 when its header `typ` is `at+jwt` (or
//! `application/at+jwt`), or when its `iss` names a configured trusted issuer;
//! every other token is a 0.x token (a `mercure` claim) and keeps today's rules.
//!
//! An issuer's keys are static (`ISSUER|ALGORITHM|KEY`) or come from its JWK
//! Set (`ISSUER|jwks|URI`, see [`crate::jwks`]), or both.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use hubbub_proto::Selector;
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::Value;
use thiserror::Error;

use crate::jwks::{JwksSource, KeySet};

/// The authorization detail type the draft defines (compared byte by byte).
pub const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// Longest token read at all (bytes): bounds base64 and JSON work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Most `authorization_details` entries per token.
pub const MAX_DETAILS: usize = 64;
/// Most topic matchers over all the details of one token.
pub const MAX_MATCHERS: usize = 1000;
/// Longest `match` value (bytes).
pub const MAX_MATCH_BYTES: usize = 2048;
/// URL-pattern matchers per token: each is compiled (regexps, size-capped)
/// every time the token is verified.
pub const MAX_URL_PATTERNS: usize = 16;

/// The asymmetric algorithms a trusted issuer's key may use: all a JWK Set
/// key may have (a JWK Set is public, so a secret in it would be anyone's).
const ASYMMETRIC: &[Algorithm] = &[
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// The HMAC algorithms, allowed only with a statically configured shared secret.
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// Whether a static key may use `alg`. Never `none` (jsonwebtoken cannot even
/// parse it).
fn allowed(alg: &Algorithm) -> bool {
    ASYMMETRIC.contains(alg) || HMAC.contains(alg)
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum IssuerError {
    #[error("{0:?} is not `ISSUER|ALGORITHM|KEY` nor `ISSUER|jwks|URI`")]
    Syntax(String),
    #[error("issuer {iss:?}: JWKS URI {source}")]
    Jwks {
        iss: String,
        source: crate::jwks::UriError,
    },
    #[error(
        "issuer {iss:?}: algorithm {alg:?} is not allowed (EdDSA, ES256/384, RS256/384/512, PS256/384/512, HS256/384/512)"
    )]
    Algorithm { iss: String, alg: String },
    #[error("issuer {iss:?}: invalid {alg:?} key: {reason}")]
    Key {
        iss: String,
        alg: String,
        reason: String,
    },
}

/// Why a 1.0 token is invalid (all answered 401 `error="invalid_token"`).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("the token's typ must be at+jwt")]
    Typ,
    #[error(
        "the token header carries key material or critical extensions (jwk, jku, x5u, x5c, crit), which are refused"
    )]
    HeaderKeys,
    #[error("the token's iss is not a trusted issuer")]
    UnknownIssuer,
    #[error("no key of the issuer verifies the token with algorithm {0:?}")]
    NoKey(Algorithm),
    #[error("the token is invalid: {0}")]
    Validation(String),
    #[error("invalid authorization_details: {0}")]
    Details(String),
}

#[derive(Clone)]
struct IssuerKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// One trusted issuer's keys: static ones and JWK Sets.
#[derive(Clone, Default)]
struct Issuer {
    keys: Vec<IssuerKey>,
    jwks: Vec<Arc<JwksSource>>,
}

/// How `oauth_issuers` entries are read.
#[derive(Debug, Clone, Copy, Default)]
pub struct IssuerOptions {
    /// Accept `http://` JWKS URIs (`oauth_jwks_allow_http`; tests only).
    pub jwks_allow_http: bool,
}

/// The trusted issuers and their keys. Cloning shares the JWK Set caches.
#[derive(Clone, Default)]
pub struct Issuers {
    by_iss: HashMap<String, Issuer>,
}

impl std::fmt::Debug for Issuers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.by_iss.keys()).finish()
    }
}

impl Issuers {
    /// Entries `ISSUER|ALGORITHM|KEY` (KEY: an HS* secret or a PEM public key);
    /// one issuer may appear several times (key rotation).
    pub fn parse(entries: &[String]) -> Result<Self, IssuerError> {
        Self::parse_with(entries, IssuerOptions::default())
    }

    /// As [`parse`](Self::parse), also reading `ISSUER|jwks|URI` entries
    /// (`https://` unless `options` allow http). Nothing is fetched here: see
    /// [`Issuers::start_jwks`].
    pub fn parse_with(entries: &[String], options: IssuerOptions) -> Result<Self, IssuerError> {
        let mut by_iss: HashMap<String, Issuer> = HashMap::new();
        for entry in entries {
            let mut parts = entry.splitn(3, '|');
            let (Some(iss), Some(alg_name), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(IssuerError::Syntax(entry.chars().take(80).collect()));
            };
            let (iss, alg_name) = (iss.trim(), alg_name.trim());
            if iss.is_empty() || key.is_empty() {
                return Err(IssuerError::Syntax(entry.chars().take(80).collect()));
            }
            if alg_name.eq_ignore_ascii_case("jwks") {
                let uri =
                    crate::jwks::check_uri(key, options.jwks_allow_http).map_err(|source| {
                        IssuerError::Jwks {
                            iss: iss.into(),
                            source,
                        }
                    })?;
                let issuer = by_iss.entry(iss.to_owned()).or_default();
                if !issuer.jwks.iter().any(|s| *s.uri() == uri) {
                    issuer
                        .jwks
                        .push(Arc::new(JwksSource::new(iss, uri, ASYMMETRIC)));
                }
                continue;
            }
            let alg = Algorithm::from_str(alg_name)
                .ok()
                .filter(allowed)
                .ok_or_else(|| IssuerError::Algorithm {
                    iss: iss.into(),
                    alg: alg_name.into(),
                })?;
            let key = decoding_key(alg, key).map_err(|e| IssuerError::Key {
                iss: iss.into(),
                alg: alg_name.into(),
                reason: e.to_string(),
            })?;
            by_iss
                .entry(iss.to_owned())
                .or_default()
                .keys
                .push(IssuerKey { alg, key });
        }
        Ok(Self { by_iss })
    }

    /// Starts fetching every JWK Set (in the background) and counts fetches
    /// in `fetches` (`issuer`, `result`). Sources already started (kept by a
    /// reload) are left alone. Needs a tokio runtime.
    pub fn start_jwks(&self, fetches: &prometheus::IntCounterVec) {
        for source in self.by_iss.values().flat_map(|i| &i.jwks) {
            source.start(fetches);
        }
    }

    /// Takes over `old`'s JWK Set caches for the same issuer and URI, so a
    /// reload neither refetches every set nor has a moment without keys.
    pub fn adopt_jwks(&mut self, old: &Issuers) {
        for (iss, issuer) in &mut self.by_iss {
            let Some(previous) = old.by_iss.get(iss) else {
                continue;
            };
            for source in &mut issuer.jwks {
                if let Some(kept) = previous.jwks.iter().find(|s| s.uri() == source.uri()) {
                    *source = Arc::clone(kept);
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.by_iss.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_iss.keys().map(String::as_str)
    }

    /// Whether `token` is to be validated as a 1.0 token (see the module doc).
    /// Never on a hub without trusted issuers, so a 0.x-only hub judges every
    /// token exactly as before. Bounded: only a header of at most 4 KiB is
    /// read, and the claims only of a token of at most [`MAX_TOKEN_BYTES`] (a
    /// larger 0.x token stays 0.x).
    pub fn is_v1(&self, token: &str) -> bool {
        if self.is_empty() {
            return false;
        }
        let header_len = token.find('.').unwrap_or(token.len());
        if header_len <= 4096
            && jsonwebtoken::decode_header(token)
                .ok()
                .and_then(|h| h.typ)
                .is_some_and(|t| typ_is_at_jwt(&t))
        {
            return true;
        }
        if token.len() > MAX_TOKEN_BYTES {
            return false;
        }
        #[derive(Deserialize)]
        struct Iss {
            iss: Option<Value>,
        }
        jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
            .ok()
            .and_then(|c| c.iss)
            .and_then(|v| v.as_str().map(|s| self.by_iss.contains_key(s)))
            .unwrap_or(false)
    }

    /// Validates a 1.0 token for the hub whose resource identifier is `resource`.
    /// Async because a token whose `kid` the cached JWK Set lacks may wait (at
    /// most [`crate::jwks::REFRESH_WAIT`]) for a rate-limited refresh.
    pub async fn verify(&self, token: &str, resource: &str) -> Result<Grants, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| TokenError::Malformed(e.to_string()))?;
        if !header.typ.as_deref().is_some_and(typ_is_at_jwt) {
            return Err(TokenError::Typ);
        }
        if carries_keys(&header) {
            return Err(TokenError::HeaderKeys);
        }
        #[derive(Deserialize)]
        struct Iss {
            iss: String,
        }
        // Unverified, only to pick the issuer's keys; verified below.
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<Iss>(token)
            .map_err(|_| TokenError::UnknownIssuer)?
            .iss;
        let issuer = self.by_iss.get(&iss).ok_or(TokenError::UnknownIssuer)?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.set_issuer(&[&iss]);
        validation.set_audience(&[resource]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.leeway = 0;
        let mut attempt = Attempt {
            token,
            validation: &validation,
            last: None,
        };
        for key in issuer.keys.iter().filter(|k| k.alg == header.alg) {
            if let Some(claims) = attempt.key(&key.key) {
                return grants(claims, resource);
            }
        }
        let kid = header.kid.as_deref();
        let mut missed = Vec::new();
        for source in &issuer.jwks {
            match attempt.set(&source.keys(), kid, header.alg) {
                (Some(claims), _) => return grants(claims, resource),
                (None, false) => missed.push(source),
                (None, true) => {}
            }
        }
        // The key may be new (rotation): refresh those sets (rate-limited) and
        // try again with what they hold then.
        for source in missed {
            source.refresh_on_demand().await;
            if let (Some(claims), _) = attempt.set(&source.keys(), kid, header.alg) {
                return grants(claims, resource);
            }
        }
        let last = attempt.last;
        Err(match last {
            None => TokenError::NoKey(header.alg),
            Some(e) => TokenError::Validation(e.to_string()),
        })
    }
}

/// Verifying one token with key after key, keeping the last failure (the
/// reason told to the client when no key verifies it).
struct Attempt<'a> {
    token: &'a str,
    validation: &'a Validation,
    last: Option<jsonwebtoken::errors::Error>,
}

impl Attempt<'_> {
    fn key(&mut self, key: &DecodingKey) -> Option<Claims> {
        match jsonwebtoken::decode::<Claims>(self.token, key, self.validation) {
            Ok(data) => Some(data.claims),
            Err(e) => {
                self.last = Some(e);
                None
            }
        }
    }

    /// Tries the keys of a JWK Set fit for `kid` and `alg`; the flag is
    /// [`KeySet::candidates`]'s `known` (false: a refresh may find the key).
    fn set(&mut self, set: &KeySet, kid: Option<&str>, alg: Algorithm) -> (Option<Claims>, bool) {
        let (keys, known) = set.candidates(kid, alg);
        (keys.into_iter().find_map(|k| self.key(&k.key)), known)
    }
}

fn decoding_key(alg: Algorithm, key: &str) -> jsonwebtoken::errors::Result<DecodingKey> {
    let pem = key.as_bytes();
    match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => DecodingKey::from_secret(pem),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        _ => DecodingKey::from_rsa_pem(pem),
    }
}

/// `at+jwt`, or `application/at+jwt`, case-insensitively (RFC 7515, 4.1.9).
fn typ_is_at_jwt(typ: &str) -> bool {
    let t = typ.trim();
    let t = match t.get(..12) {
        Some(prefix) if prefix.eq_ignore_ascii_case("application/") => &t[12..],
        _ => t,
    };
    t.eq_ignore_ascii_case("at+jwt")
}

fn carries_keys(h: &Header) -> bool {
    h.jwk.is_some() || h.jku.is_some() || h.x5u.is_some() || h.x5c.is_some() || h.crit.is_some()
}

#[derive(Deserialize)]
struct Claims {
    exp: u64,
    #[serde(default)]
    authorization_details: Option<Value>,
}

/// What a valid 1.0 token allows.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    pub publish: Vec<Selector>,
    pub subscribe: Vec<Selector>,
    pub exp: u64,
    /// The first subscribe detail's `payload` (an object).
    pub payload: Option<Value>,
}

/// `base` resolves relative URL patterns (the hub's resource identifier).
fn grants(claims: Claims, base: &str) -> Result<Grants, TokenError> {
    let mut out = Grants {
        exp: claims.exp,
        ..Grants::default()
    };
    let details = match claims.authorization_details {
        None => return Ok(out),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("authorization_details must be an array")),
    };
    if details.len() > MAX_DETAILS {
        return Err(bad(format!("more than {MAX_DETAILS} entries")));
    }
    let (mut matchers, mut patterns) = (0usize, 0usize);
    for detail in &details {
        let Value::Object(detail) = detail else {
            return Err(bad("an entry is not an object"));
        };
        match detail.get("type") {
            Some(Value::String(t)) if t == DETAIL_TYPE => {}
            // Another API's detail: not ours to judge.
            Some(Value::String(_)) => continue,
            _ => return Err(bad("an entry has no string type")),
        }
        let actions = non_empty_array(detail.get("actions"), "actions")?;
        let (mut publish, mut subscribe) = (false, false);
        for action in actions {
            match action.as_str() {
                Some("publish") => publish = true,
                Some("subscribe") => subscribe = true,
                Some(_) => {} // unknown actions grant nothing
                None => return Err(bad("an action is not a string")),
            }
        }
        let topics = non_empty_array(detail.get("topics"), "topics")?;
        matchers += topics.len();
        if matchers > MAX_MATCHERS {
            return Err(bad(format!("more than {MAX_MATCHERS} topic matchers")));
        }
        let selectors = topics
            .iter()
            .map(|t| matcher(t, base, &mut patterns))
            .collect::<Result<Vec<_>, _>>()?;
        match detail.get("payload") {
            None => {}
            Some(p @ Value::Object(_)) if subscribe && out.payload.is_none() => {
                out.payload = Some(p.clone());
            }
            Some(Value::Object(_)) => {}
            Some(_) => return Err(bad("payload must be an object")),
        }
        if publish {
            out.publish.extend(selectors.iter().cloned());
        }
        if subscribe {
            out.subscribe.extend(selectors);
        }
    }
    Ok(out)
}

fn non_empty_array<'a>(v: Option<&'a Value>, name: &str) -> Result<&'a [Value], TokenError> {
    match v {
        Some(Value::Array(list)) if !list.is_empty() => Ok(list),
        _ => Err(bad(format!("{name} must be a non-empty array"))),
    }
}

/// One topic matcher of a grant; `patterns` counts the URL patterns compiled
/// for this token (each costs a regex compilation, so they are capped).
fn matcher(v: &Value, base: &str, patterns: &mut usize) -> Result<Selector, TokenError> {
    let Value::Object(m) = v else {
        return Err(bad("a topic matcher is not an object"));
    };
    let Some(Value::String(pattern)) = m.get("match") else {
        return Err(bad("a topic matcher has no string match"));
    };
    if pattern.is_empty() || pattern.len() > MAX_MATCH_BYTES {
        return Err(bad(format!(
            "a match is empty or longer than {MAX_MATCH_BYTES} bytes"
        )));
    }
    let kind = match m.get("match_type") {
        None => "exact",
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err(bad("match_type must be a string")),
    };
    match kind {
        "exact" | "urlpattern" if pattern == "*" => Ok(Selector::Any),
        "exact" => Ok(Selector::Exact(pattern.clone())),
        "urlpattern" => {
            *patterns += 1;
            if *patterns > MAX_URL_PATTERNS {
                return Err(bad(format!(
                    "more than {MAX_URL_PATTERNS} urlpattern matchers"
                )));
            }
            Selector::url_pattern(pattern, base)
                .map_err(|e| bad(format!("bad urlpattern {pattern:?}: {e}")))
        }
        other => Err(bad(format!("unsupported match_type {other:?}"))),
    }
}

fn bad(reason: impl Into<String>) -> TokenError {
    TokenError::Details(reason.into())
}

/// The resource identifier to find in `aud`: the configured one, else the
/// hub's URL on the request's origin (`X-Forwarded-Proto` or http, `Host`).
pub fn resource(configured: Option<&str>, headers: &http::HeaderMap) -> Option<String> {
    if let Some(r) = configured {
        return Some(r.to_owned());
    }
    let host = headers.get(http::header::HOST)?.to_str().ok()?;
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    Some(format!("{scheme}://{host}{}", crate::connection::HUB_PATH))
}

/// Where RFC 9728 puts the metadata of `resource`: the well-known segment
/// inserted between its authority and its path.
pub fn metadata_url(resource: &str) -> Option<String> {
    let (scheme, rest) = resource.split_once("://")?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let path = if path == "/" { "" } else { path };
    Some(format!("{scheme}://{authority}{METADATA_PREFIX}{path}"))
}

/// RFC 9728's well-known path prefix.
pub const METADATA_PREFIX: &str = "/.well-known/oauth-protected-resource";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_urls() {
        for (resource, want) in [
            (
                "https://hub.example/.well-known/mercure",
                "https://hub.example/.well-known/oauth-protected-resource/.well-known/mercure",
            ),
            (
                "http://127.0.0.1:8080/.well-known/mercure?x#y",
                "http://127.0.0.1:8080/.well-known/oauth-protected-resource/.well-known/mercure",
            ),
            (
                "https://hub.example",
                "https://hub.example/.well-known/oauth-protected-resource",
            ),
            (
                "https://hub.example/",
                "https://hub.example/.well-known/oauth-protected-resource",
            ),
        ] {
            assert_eq!(metadata_url(resource).as_deref(), Some(want), "{resource}");
        }
        assert_eq!(metadata_url("not a url"), None);
    }

    #[test]
    fn typ_forms() {
        for t in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+Jwt",
        ] {
            assert!(typ_is_at_jwt(t), "{t}");
        }
        for t in [
            "JWT",
            "jwt",
            "at+jwtx",
            "application/jwt",
            "",
            "application/",
        ] {
            assert!(!typ_is_at_jwt(t), "{t}");
        }
    }

    #[test]
    fn which_tokens_are_1_0() {
        let claims = serde_json::json!({"iss": "https://i", "mercure": {}});
        let plain = hubbub_proto::token::mint_hmac("k", "HS256", &claims).unwrap();
        let at =
            hubbub_proto::token::mint_access_token("HS256", "k", &serde_json::json!({})).unwrap();
        let other =
            hubbub_proto::token::mint_hmac("k", "HS256", &serde_json::json!({"iss": "https://x"}))
                .unwrap();
        let none = Issuers::default();
        assert!(!none.is_v1(&plain) && !none.is_v1(&at), "0.x-only hub");
        let some = Issuers::parse(&["https://i|HS256|k".into()]).unwrap();
        assert!(some.is_v1(&plain), "a trusted iss");
        assert!(some.is_v1(&at), "typ at+jwt");
        assert!(!some.is_v1(&other), "an unknown iss without typ is 0.x");
        assert!(!some.is_v1("garbage"));
    }

    #[test]
    fn jwks_entries() {
        let http = "https://i|jwks|http://127.0.0.1:9/jwks".to_owned();
        assert!(matches!(
            Issuers::parse(std::slice::from_ref(&http)),
            Err(IssuerError::Jwks {
                source: crate::jwks::UriError::Insecure(_),
                ..
            })
        ));
        let allow = IssuerOptions {
            jwks_allow_http: true,
        };
        let entries = vec![
            http.clone(),
            http.clone(),
            "https://i|HS256|secret".into(),
            "https://j|JWKS|https://j.example/jwks".into(),
        ];
        let issuers = Issuers::parse_with(&entries, allow).unwrap();
        let i = &issuers.by_iss["https://i"];
        assert_eq!((i.keys.len(), i.jwks.len()), (1, 1), "mixed, deduplicated");
        assert!(
            issuers.is_v1(
                &hubbub_proto::token::mint_hmac(
                    "k",
                    "HS256",
                    &serde_json::json!({"iss": "https://j"})
                )
                .unwrap()
            )
        );
        assert!(matches!(
            Issuers::parse_with(&["https://i|jwks|ftp://x/jwks".into()], allow),
            Err(IssuerError::Jwks { .. })
        ));
    }

    /// A reload keeps the cache (the same `Arc`) of an unchanged issuer and
    /// URI, and only of those.
    #[test]
    fn a_reload_adopts_unchanged_jwks_sources() {
        let parse = |entries: &[&str]| {
            let entries: Vec<String> = entries.iter().map(|e| (*e).to_owned()).collect();
            Issuers::parse_with(&entries, IssuerOptions::default()).unwrap()
        };
        let old = parse(&[
            "https://a|jwks|https://a.example/jwks",
            "https://b|jwks|https://b.example/jwks",
        ]);
        let mut new = parse(&[
            "https://a|jwks|https://a.example/jwks",
            "https://b|jwks|https://b.example/moved",
            "https://c|jwks|https://a.example/jwks",
        ]);
        new.adopt_jwks(&old);
        let source = |i: &Issuers, iss: &str| Arc::clone(&i.by_iss[iss].jwks[0]);
        assert!(Arc::ptr_eq(
            &source(&new, "https://a"),
            &source(&old, "https://a")
        ));
        assert!(!Arc::ptr_eq(
            &source(&new, "https://b"),
            &source(&old, "https://b")
        ));
        assert!(
            !Arc::ptr_eq(&source(&new, "https://c"), &source(&old, "https://a")),
            "another issuer's set is never shared"
        );
    }

    #[test]
    fn issuer_entries() {
        assert!(Issuers::parse(&["https://i|HS256|secret".into()]).is_ok());
        assert!(matches!(
            Issuers::parse(&["https://i|none|secret".into()]),
            Err(IssuerError::Algorithm { .. })
        ));
        assert!(matches!(
            Issuers::parse(&["https://i|HS256".into()]),
            Err(IssuerError::Syntax(_))
        ));
        assert!(matches!(
            Issuers::parse(&["https://i|RS256|not a pem".into()]),
            Err(IssuerError::Key { .. })
        ));
    }
}
