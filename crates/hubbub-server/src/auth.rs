//! JWT authorization: one key and algorithm per role, token lookup (header, then
//! query, then cookie), and the `mercure` claim. Kept behind small types so the
//! draft-08 token format can be added without touching the routes.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use thiserror::Error;

/// The most selectors one claim may list, as for topics in a request.
const MAX_CLAIM_SELECTORS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

#[derive(Debug, Error)]
pub enum KeyError {
    #[error(
        "unsupported algorithm {0:?} (HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA)"
    )]
    Algorithm(String),
    #[error("invalid key for {alg:?}: {source}")]
    Key {
        alg: Algorithm,
        source: jsonwebtoken::errors::Error,
    },
}

/// Why a token was refused. All map to 401; the message tells the client why.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing authorization token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has no mercure.publish claim")]
    NoPublishClaim,
    #[error("the {0} claim lists more than 1000 selectors")]
    TooManySelectors(&'static str),
    #[error("invalid selector in the token: {0}")]
    BadSelector(String),
    /// The token's presentation is malformed (400 `invalid_request`).
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error(transparent)]
    V1(#[from] crate::oauth::TokenError),
    #[error("no resource identifier: set oauth_resource or send a Host header")]
    NoResource,
    /// A 0.x token (a `mercure` claim, no `typ: at+jwt` from a trusted issuer)
    /// on a hub without `compat_0x`: its validation is weaker than the draft's.
    #[error(
        "Mercure 0.x tokens are not accepted: this hub speaks Mercure 1.0 (RFC 9068 access tokens from a trusted issuer); 0.x clients need compat_0x"
    )]
    V0Refused,
}

impl AuthError {
    /// The RFC 6750 `error` code: none for a missing token (a bare challenge).
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            Self::InvalidRequest(_) => Some("invalid_request"),
            _ => Some("invalid_token"),
        }
    }
}

/// What a verified token allows, whatever its version. For a 0.x token only
/// the asked role's claim is read (`None`: the claim is absent); a 1.0 token
/// always has both lists (empty: nothing granted).
#[derive(Debug, Clone, Default)]
pub struct Granted {
    pub publish: Option<Vec<hubbub_proto::Selector>>,
    pub subscribe: Option<Vec<hubbub_proto::Selector>>,
    pub exp: Option<u64>,
    /// A Mercure 1.0 (RFC 9068) token.
    pub v1: bool,
    /// The subscriber's `payload` (0.x: `mercure.payload`; 1.0: the first
    /// subscribe detail's), copied into its subscription events.
    pub payload: Option<serde_json::Value>,
}

/// Where a token came from; cookie-authenticated publishes need an origin check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    Header,
    Query,
    Cookie,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MercureClaim {
    pub publish: Option<Vec<String>>,
    pub subscribe: Option<Vec<String>>,
    pub payload: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Claims {
    #[serde(default)]
    pub mercure: MercureClaim,
    pub exp: Option<u64>,
}

#[derive(Clone)]
struct RoleKey {
    key: DecodingKey,
    validation: Validation,
}

/// Verifies tokens for both roles. Cheap to clone (keys are shared).
#[derive(Clone)]
pub struct Auth {
    /// The 0.x keys (publisher, subscriber): `None` unless `compat_0x`.
    v0: Option<Arc<(RoleKey, RoleKey)>>,
    anonymous: bool,
    cookie_name: String,
    issuers: Arc<crate::oauth::Issuers>,
    resource: Option<String>,
    v1_cookie_name: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field(
                "v0_algs",
                &self
                    .v0
                    .as_ref()
                    .map(|k| (&k.0.validation.algorithms, &k.1.validation.algorithms)),
            )
            .field("anonymous", &self.anonymous)
            .field("cookie_name", &self.cookie_name)
            .field("issuers", &self.issuers)
            .field("resource", &self.resource)
            .field("v1_cookie_name", &self.v1_cookie_name)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// `(key, algorithm)` per role. HS* keys are secrets; the others are PEM public keys.
    pub fn new(
        publisher: (&str, &str),
        subscriber: (&str, &str),
        anonymous: bool,
        cookie_name: String,
    ) -> Result<Self, (&'static str, KeyError)> {
        let keys = (
            role_key(publisher.0, publisher.1).map_err(|e| ("publisher", e))?,
            role_key(subscriber.0, subscriber.1).map_err(|e| ("subscriber", e))?,
        );
        Ok(Self {
            v0: Some(Arc::new(keys)),
            ..Self::v1_only(anonymous, cookie_name)
        })
    }

    /// A hub serving Mercure 1.0 clients only (no `compat_0x`): no 0.x keys,
    /// so `mercure`-claim tokens, the `authorization` query parameter and the
    /// 0.x cookie are refused, and the draft's token checks (`typ`, `iss`,
    /// `aud`, `exp`) cannot be bypassed by presenting a 0.x token.
    pub fn v1_only(anonymous: bool, cookie_name: String) -> Self {
        Self {
            v0: None,
            anonymous,
            cookie_name,
            issuers: Arc::default(),
            resource: None,
            v1_cookie_name: "__Secure-mercure_access_token".into(),
        }
    }

    /// Whether 0.x clients are served (see [`Auth::v1_only`]).
    pub fn compat_0x(&self) -> bool {
        self.v0.is_some()
    }

    /// Mercure 1.0 tokens: the trusted issuers, the resource identifier (`None`:
    /// derived from each request), the cookie a 1.0 token may come in.
    pub fn with_oauth(
        mut self,
        issuers: crate::oauth::Issuers,
        resource: Option<String>,
        v1_cookie_name: String,
    ) -> Self {
        self.issuers = Arc::new(issuers);
        self.resource = resource;
        self.v1_cookie_name = v1_cookie_name;
        self
    }

    /// Starts fetching the trusted issuers' JWK Sets (see
    /// [`crate::oauth::Issuers::start_jwks`]). Needs a tokio runtime.
    pub fn start_jwks(&self, fetches: &prometheus::IntCounterVec) {
        self.issuers.start_jwks(fetches);
    }

    /// On a reload: keeps `old`'s JWK Set caches where the issuer and URI
    /// stayed the same (see [`crate::oauth::Issuers::adopt_jwks`]).
    pub fn adopt_jwks(&mut self, old: &Auth) {
        Arc::make_mut(&mut self.issuers).adopt_jwks(&old.issuers);
    }

    /// The trusted issuers' identifiers, sorted.
    pub fn issuer_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.issuers.names().map(str::to_owned).collect();
        names.sort();
        names
    }

    /// The RFC 9728 metadata URL for this request's resource identifier
    /// (`None` without trusted issuers: a 0.x-only hub publishes none).
    pub fn metadata_url(&self, headers: &HeaderMap) -> Option<String> {
        if self.issuers.is_empty() {
            return None;
        }
        crate::oauth::metadata_url(&self.resource(headers)?)
    }

    /// The RFC 9728 protected resource metadata (`None` without trusted issuers).
    pub fn metadata(&self, headers: &HeaderMap) -> Option<serde_json::Value> {
        if self.issuers.is_empty() {
            return None;
        }
        Some(serde_json::json!({
            "resource": self.resource(headers)?,
            "authorization_servers": self.issuer_names(),
            "authorization_details_types_supported": [crate::oauth::DETAIL_TYPE],
            "bearer_methods_supported": ["header"],
            "mercure_cookie": self.v1_cookie_name,
            "mercure_matcher_types_supported": ["exact", "urlpattern"],
        }))
    }

    /// The configured resource identifier (`oauth_resource`), if any.
    pub fn configured_resource(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    /// The resource identifier a 1.0 token's `aud` must contain for this request.
    pub fn resource(&self, headers: &HeaderMap) -> Option<String> {
        crate::oauth::resource(self.resource.as_deref(), headers)
    }

    /// The token of a request, checking its presentation: one `Authorization`
    /// header at most; a 1.0 token never in the query string.
    pub fn present(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Result<Option<(String, TokenSource)>, AuthError> {
        if headers.get_all(http::header::AUTHORIZATION).iter().count() > 1 {
            return Err(AuthError::InvalidRequest(
                "more than one Authorization header",
            ));
        }
        let found = self.find_token(headers, query_token);
        if let Some((token, TokenSource::Query)) = &found
            && (!self.compat_0x() || self.issuers.is_v1(token))
        {
            return Err(AuthError::InvalidRequest(
                "access tokens are not accepted in the query string",
            ));
        }
        Ok(found)
    }

    /// Verifies a token of either version for `role`; `parse` compiles a 0.x
    /// claim's selectors. Async: a 1.0 token may wait for its issuer's JWK Set.
    pub async fn authorize(
        &self,
        role: Role,
        token: &str,
        headers: &HeaderMap,
        parse: impl Fn(&str) -> Result<hubbub_proto::Selector, hubbub_proto::SelectorError>,
    ) -> Result<Granted, AuthError> {
        if self.issuers.is_v1(token) {
            let resource = self.resource(headers).ok_or(AuthError::NoResource)?;
            let g = self.issuers.verify(token, &resource).await?;
            return Ok(Granted {
                publish: Some(g.publish),
                subscribe: Some(g.subscribe),
                exp: Some(g.exp),
                v1: true,
                payload: g.payload,
            });
        }
        let claims = self.verify(role, token)?;
        let (publish, subscribe) = match role {
            Role::Publisher => (
                claims
                    .mercure
                    .publish
                    .as_deref()
                    .map(|l| claim_selectors(l, "mercure.publish", &parse))
                    .transpose()?,
                None,
            ),
            Role::Subscriber => (
                None,
                claims
                    .mercure
                    .subscribe
                    .as_deref()
                    .map(|l| claim_selectors(l, "mercure.subscribe", &parse))
                    .transpose()?,
            ),
        };
        Ok(Granted {
            publish,
            subscribe,
            exp: claims.exp,
            v1: false,
            payload: claims.mercure.payload,
        })
    }

    pub fn anonymous(&self) -> bool {
        self.anonymous
    }

    /// First found wins: `Authorization: Bearer`, then the `authorization` query
    /// parameter, then the 0.x cookie (the last two only with `compat_0x`),
    /// then the 1.0 cookie. A query token without `compat_0x` is still found,
    /// so that [`Auth::present`] refuses it instead of ignoring it.
    pub fn find_token(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
    ) -> Option<(String, TokenSource)> {
        if let Some(token) = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
        {
            return Some((token.to_owned(), TokenSource::Header));
        }
        if let Some(token) = query_token {
            return Some((token.to_owned(), TokenSource::Query));
        }
        self.compat_0x()
            .then(|| cookie(headers, &self.cookie_name))
            .flatten()
            .or_else(|| cookie(headers, &self.v1_cookie_name))
            .map(|t| (t, TokenSource::Cookie))
    }

    pub fn verify(&self, role: Role, token: &str) -> Result<Claims, AuthError> {
        let keys = self.v0.as_deref().ok_or(AuthError::V0Refused)?;
        let key = match role {
            Role::Publisher => &keys.0,
            Role::Subscriber => &keys.1,
        };
        jsonwebtoken::decode::<Claims>(token, &key.key, &key.validation)
            .map(|data| data.claims)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

/// The credentials of an `Authorization` value in the Bearer scheme. Scheme
/// names are case-insensitive (RFC 9110, 11.1), so `bearer` and `BEARER`
/// count; other schemes are not ours (the query and cookie are tried next).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once([' ', '\t'])?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn role_key(key: &str, alg: &str) -> Result<RoleKey, KeyError> {
    let alg = Algorithm::from_str(alg).map_err(|_| KeyError::Algorithm(alg.into()))?;
    let pem = key.as_bytes();
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => DecodingKey::from_secret(pem),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem),
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
        other => return Err(KeyError::Algorithm(format!("{other:?}"))),
    }
    .map_err(|source| KeyError::Key { alg, source })?;
    let mut validation = Validation::new(alg);
    // Mercure tokens need not expire or carry an audience; when they do, exp/nbf hold.
    validation.required_spec_claims = HashSet::new();
    validation.validate_aud = false;
    validation.validate_nbf = true;
    validation.leeway = 0;
    Ok(RoleKey { key, validation })
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"').to_owned())
}

/// Parses a claim's selector list, enforcing the cap.
pub fn claim_selectors(
    list: &[String],
    claim: &'static str,
    parse: impl Fn(&str) -> Result<hubbub_proto::Selector, hubbub_proto::SelectorError>,
) -> Result<Vec<hubbub_proto::Selector>, AuthError> {
    if list.len() > MAX_CLAIM_SELECTORS {
        return Err(AuthError::TooManySelectors(claim));
    }
    list.iter()
        .map(|s| parse(s).map_err(|e| AuthError::BadSelector(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};

    fn token(key: &str, claims: serde_json::Value) -> String {
        hubbub_proto::token::mint_hmac(key, "HS256", &claims).unwrap()
    }

    fn auth() -> Auth {
        Auth::new(
            ("pk", "HS256"),
            ("sk", "HS256"),
            false,
            "mercureAuthorization".into(),
        )
        .unwrap()
    }

    #[test]
    fn keys_are_per_role() {
        let a = auth();
        let t = token("pk", serde_json::json!({"mercure": {"publish": ["*"]}}));
        assert_eq!(
            a.verify(Role::Publisher, &t)
                .unwrap()
                .mercure
                .publish
                .unwrap(),
            ["*"]
        );
        assert!(a.verify(Role::Subscriber, &t).is_err());
    }

    #[test]
    fn expired_tokens_and_wrong_algorithms_fail() {
        let a = auth();
        let t = token("pk", serde_json::json!({"exp": 1000}));
        assert!(a.verify(Role::Publisher, &t).is_err());
        let hs512 = hubbub_proto::token::mint_hmac("pk", "HS512", &serde_json::json!({})).unwrap();
        assert!(a.verify(Role::Publisher, &hs512).is_err());
        assert!(Auth::new(("k", "XX1"), ("k", "HS256"), false, String::new()).is_err());
        assert!(Auth::new(("not a pem", "RS256"), ("k", "HS256"), false, String::new()).is_err());
    }

    /// RS256 and ES256: the hub holds the public key, the issuer signs with the private one.
    #[test]
    fn public_key_algorithms() {
        let cases = [
            (
                "RS256",
                Algorithm::RS256,
                include_str!("../tests/keys/rs256.pub"),
                include_str!("../tests/keys/rs256.key"),
            ),
            (
                "ES256",
                Algorithm::ES256,
                include_str!("../tests/keys/es256.pub"),
                include_str!("../tests/keys/es256.key"),
            ),
        ];
        for (name, alg, public, private) in cases {
            let a = Auth::new((public, name), (public, name), false, String::new()).unwrap();
            let key = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()),
                _ => EncodingKey::from_ec_pem(private.as_bytes()),
            }
            .unwrap();
            let claims = serde_json::json!({"mercure": {"publish": ["*"]}});
            let t = jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap();
            assert!(a.verify(Role::Publisher, &t).is_ok(), "{name}");
            let hs = token("secret", claims.clone());
            assert!(
                a.verify(Role::Publisher, &hs).is_err(),
                "{name} refuses an HS256 token"
            );
            // Flip one character well inside the signature.
            let mut tampered = t.clone().into_bytes();
            let i = tampered.len() - 10;
            tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(tampered).unwrap();
            assert!(
                a.verify(Role::Publisher, &tampered).is_err(),
                "{name} refuses a bad signature"
            );
        }
    }

    #[test]
    fn token_sources_in_order() {
        let a = auth();
        let mut h = HeaderMap::new();
        h.insert(
            http::header::COOKIE,
            "a=1; mercureAuthorization=c".parse().unwrap(),
        );
        assert_eq!(
            a.find_token(&h, None),
            Some(("c".into(), TokenSource::Cookie))
        );
        assert_eq!(
            a.find_token(&h, Some("q")),
            Some(("q".into(), TokenSource::Query))
        );
        h.insert(http::header::AUTHORIZATION, "Bearer h".parse().unwrap());
        assert_eq!(
            a.find_token(&h, Some("q")),
            Some(("h".into(), TokenSource::Header))
        );
        assert_eq!(a.find_token(&HeaderMap::new(), None), None);
    }

    #[test]
    fn the_bearer_scheme_ignores_case() {
        for value in [
            "Bearer t",
            "bearer t",
            "BEARER t",
            "bEaReR  t ",
            "Bearer\tt",
        ] {
            assert_eq!(bearer_token(value), Some("t"), "{value:?}");
        }
        for value in ["Basic t", "Bearert", "Bearer", "Beare t"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}
