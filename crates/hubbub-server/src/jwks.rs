//! JWK Sets (RFC 7517) of trusted issuers: an `oauth_issuers` entry
//! `ISSUER|jwks|URI` makes the issuer's verification keys those the JWK Set
//! at `URI` publishes, fetched and cached here, so issuers can rotate keys
//! without a hub reconfiguration.
//!
//! # Threat model
//!
//! - **The URI is the operator's.** Only URIs written in the configuration
//!   are ever fetched: `https://` unless `oauth_jwks_allow_http` says
//!   otherwise (plain HTTP lets anyone on the path substitute keys). Redirects
//!   are not followed, so a compromised or misconfigured issuer cannot point
//!   the hub elsewhere.
//! - **The response is still bounded.** The location is trusted, the bytes are
//!   not: a fetch takes at most [`FETCH_TIMEOUT`], a body over
//!   [`MAX_BODY_BYTES`] is refused, at most [`MAX_KEYS`] keys are kept, and a
//!   key that does not parse, is not a signature key (`use` other than `sig`),
//!   is of another type than RSA/EC/OKP (symmetric `oct` keys never: a JWKS is
//!   public) or whose algorithm is outside the allowlist is skipped (logged at
//!   debug) without failing the rest of the set. A failed fetch, an error
//!   status or a body that is not a JWK Set with at least one usable key keeps
//!   the last good set (logged at warn): an issuer outage must not log out
//!   every client.
//! - **Tokens cannot drive fetches.** A token naming a `kid` the cached set
//!   lacks triggers one refresh, but such refreshes are rate-limited to one
//!   per [`ON_DEMAND_INTERVAL`] per JWKS and shared by concurrent requests
//!   (one fetch in flight, the others wait at most [`REFRESH_WAIT`]): an
//!   attacker spraying random `kid`s causes at most one fetch per 10 s per
//!   issuer. Scheduled refreshes follow `Cache-Control: max-age`, clamped to
//!   [`MIN_MAX_AGE`]..[`MAX_MAX_AGE`].
//! - **No key material from the token.** `jwk`, `jku`, `x5u`, `x5c` headers are
//!   refused before any key is looked up (see `oauth`); the `kid` only selects
//!   among keys already fetched, and the token's `alg` must be the key's own
//!   (an RS256 token never verifies with an EC key).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use jsonwebtoken::{Algorithm, DecodingKey};
use prometheus::IntCounterVec;
use serde_json::Value;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A whole fetch (connect, TLS, headers, body) takes at most this.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWK Set body read (bytes); a larger one is refused.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most keys kept from one JWK Set (the first usable ones).
pub const MAX_KEYS: usize = 64;
/// The refresh period without `Cache-Control: max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(5 * 60);
/// `max-age` below this is raised to it: the issuer cannot make the hub poll.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(60);
/// `max-age` above this is lowered to it: rotated keys show up within a day.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Least time between two refreshes a token's unknown `kid` triggers.
pub const ON_DEMAND_INTERVAL: Duration = Duration::from_secs(10);
/// How long a request waits for a refresh in flight before verifying with
/// what is cached.
pub const REFRESH_WAIT: Duration = Duration::from_secs(2);
/// The first retry after a failed scheduled fetch; doubled up to
/// [`DEFAULT_MAX_AGE`] while the issuer stays down.
const RETRY_MIN: Duration = Duration::from_secs(5);

/// The RSA modulus below which a key is skipped (RFC 7518, 3.3: 2048 bits).
const MIN_RSA_BYTES: usize = 2048 / 8;

/// A JWKS URI refused at configuration time.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UriError {
    #[error("{0:?} is not an absolute http(s) URI")]
    Invalid(String),
    #[error(
        "{0:?} is not https:// (a JWK Set over plain HTTP can be replaced on the way; set oauth_jwks_allow_http to allow it, e.g. for tests)"
    )]
    Insecure(String),
}

/// Why a fetch brought no new set (the last good one stays).
#[derive(Debug, Error)]
pub enum FetchError {
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
    #[error("request failed: {0}")]
    Request(String),
    #[error("HTTP status {0}")]
    Status(http::StatusCode),
    #[error("the body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("not a JWK Set: {0}")]
    NotAJwkSet(String),
    #[error("no usable key ({0} skipped)")]
    NoUsableKey(usize),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// One verification key from a JWK Set.
#[derive(Clone)]
pub struct JwkKey {
    pub kid: Option<String>,
    /// The only algorithm this key verifies.
    pub alg: Algorithm,
    pub key: DecodingKey,
}

impl std::fmt::Debug for JwkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwkKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

/// The usable keys of one JWK Set.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub keys: Vec<JwkKey>,
}

impl KeySet {
    /// The keys a token with this `kid` and `alg` may verify with: those of
    /// that `kid` when the token has one, else all, and only of that `alg`.
    /// `known` is false when a refresh might find the key: the `kid` is not in
    /// the set at all (whatever its algorithm), or, without a `kid`, no key
    /// has the algorithm.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> (Vec<&JwkKey>, bool) {
        let of_kid = |k: &&JwkKey| kid.is_none_or(|kid| k.kid.as_deref() == Some(kid));
        let keys: Vec<&JwkKey> = self
            .keys
            .iter()
            .filter(of_kid)
            .filter(|k| k.alg == alg)
            .collect();
        let known = match kid {
            Some(_) => self.keys.iter().any(|k| of_kid(&k)),
            None => !keys.is_empty(),
        };
        (keys, known)
    }

    /// Parses a JWK Set body: the usable keys (at most [`MAX_KEYS`]) and how
    /// many were skipped. Fails only when the body is not a JWK Set at all or
    /// has no usable key (then the caller keeps its previous set).
    pub fn parse(body: &[u8], allowed: &[Algorithm]) -> Result<(Self, usize), FetchError> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| FetchError::NotAJwkSet(e.to_string()))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(FetchError::NotAJwkSet("no \"keys\" array".into()));
        };
        let (mut keys, mut skipped) = (Vec::new(), 0usize);
        for (i, entry) in entries.iter().enumerate() {
            if keys.len() == MAX_KEYS {
                skipped += entries.len() - i;
                tracing::debug!(
                    ignored = entries.len() - i,
                    "JWK Set: more than {MAX_KEYS} usable keys; the rest are ignored"
                );
                break;
            }
            match parse_key(entry, allowed) {
                Ok(key) => keys.push(key),
                Err(why) => {
                    skipped += 1;
                    let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                    tracing::debug!(index = i, kid, "JWK Set: key skipped: {why}");
                }
            }
        }
        if keys.is_empty() {
            return Err(FetchError::NoUsableKey(skipped));
        }
        Ok((Self { keys }, skipped))
    }
}

/// One JWK to a verification key, or why it is not usable.
fn parse_key(jwk: &Value, allowed: &[Algorithm]) -> Result<JwkKey, String> {
    let Value::Object(jwk) = jwk else {
        return Err("not an object".into());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match jwk.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    match text("use")? {
        None | Some("sig") => {}
        Some(other) => return Err(format!("use {other:?} is not sig")),
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("key_ops does not include verify".into());
        }
    }
    let kid = text("kid")?.map(str::to_owned);
    let kty = text("kty")?.ok_or("no kty")?;
    let crv = text("crv")?;
    // The algorithm the key type implies when `alg` is absent (one per key:
    // RFC 8725, 3.1, a key is used with one algorithm only).
    let natural = match (kty, crv) {
        ("RSA", _) => Algorithm::RS256,
        ("EC", Some("P-256")) => Algorithm::ES256,
        ("EC", Some("P-384")) => Algorithm::ES384,
        ("OKP", Some("Ed25519")) => Algorithm::EdDSA,
        ("EC" | "OKP", crv) => return Err(format!("unsupported {kty} curve {crv:?}")),
        (other, _) => return Err(format!("unsupported kty {other:?}")),
    };
    let alg = match text("alg")? {
        None => natural,
        Some(name) => name
            .parse::<Algorithm>()
            .map_err(|_| format!("unknown alg {name:?}"))?,
    };
    if !allowed.contains(&alg) {
        return Err(format!("alg {alg:?} is not allowed"));
    }
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let v = text(name)?.ok_or_else(|| format!("no {name}"))?;
        URL_SAFE_NO_PAD
            .decode(v.trim_end_matches('='))
            .map_err(|e| format!("{name} is not base64url: {e}"))
    };
    let key = match (kty, alg) {
        (
            "RSA",
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512,
        ) => {
            let (n, e) = (bytes("n")?, bytes("e")?);
            let n = strip_zeros(&n);
            if n.len() < MIN_RSA_BYTES {
                return Err(format!("RSA modulus of {} bits is too short", n.len() * 8));
            }
            if e.is_empty() || e.len() > 8 {
                return Err("bad RSA exponent".into());
            }
            DecodingKey::from_rsa_raw_components(n, &e)
        }
        ("EC", Algorithm::ES256 | Algorithm::ES384) if alg == natural => {
            let size = if alg == Algorithm::ES256 { 32 } else { 48 };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != size || y.len() != size {
                return Err(format!("{crv:?} coordinates are not {size} bytes"));
            }
            let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
            DecodingKey::from_ec_components(&x, &y).map_err(|e| e.to_string())?
        }
        ("OKP", Algorithm::EdDSA) => {
            let x = bytes("x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key is 32 bytes".into());
            }
            DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(x))
                .map_err(|e| e.to_string())?
        }
        _ => return Err(format!("alg {alg:?} does not fit a {kty} key {crv:?}")),
    };
    Ok(JwkKey { kid, alg, key })
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// `Cache-Control: max-age`, clamped; [`DEFAULT_MAX_AGE`] when absent.
pub fn max_age(headers: &http::HeaderMap) -> Duration {
    let found = headers
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|d| d.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("max-age"))
        .and_then(|(_, v)| v.trim().trim_matches('"').parse::<u64>().ok());
    match found {
        None => DEFAULT_MAX_AGE,
        Some(secs) => Duration::from_secs(secs).clamp(MIN_MAX_AGE, MAX_MAX_AGE),
    }
}

/// Checks an `ISSUER|jwks|URI` entry's URI (`https`, or `http` when allowed).
pub fn check_uri(uri: &str, allow_http: bool) -> Result<http::Uri, UriError> {
    let invalid = || UriError::Invalid(uri.chars().take(200).collect());
    let parsed: http::Uri = uri.trim().parse().map_err(|_| invalid())?;
    if parsed.host().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    match parsed.scheme_str() {
        Some("https") => Ok(parsed),
        Some("http") if allow_http => Ok(parsed),
        Some("http") => Err(UriError::Insecure(uri.into())),
        _ => Err(invalid()),
    }
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Debug, Default)]
struct Refresh {
    /// When the last token-triggered refresh started (the rate limit).
    last_on_demand: Option<Instant>,
    /// The fetch in flight: `true` is sent when it is done.
    inflight: Option<watch::Receiver<bool>>,
    /// When the scheduler fetches next.
    next_due: Option<Instant>,
    /// Failed fetches in a row (the scheduler's backoff).
    failures: u32,
}

/// One issuer's JWK Set: its URI, the last good set, and the refresh state.
/// Shared (`Arc`) by every `Issuers` that names the same issuer and URI, so
/// a config reload keeps the cache.
pub struct JwksSource {
    issuer: String,
    uri: http::Uri,
    allowed: &'static [Algorithm],
    keys: ArcSwap<KeySet>,
    refresh: Mutex<Refresh>,
    started: AtomicBool,
    /// `hubbub_jwks_fetches_total`, once the server has started the source.
    fetches: OnceLock<IntCounterVec>,
    client: OnceLock<HttpsClient>,
    /// Cancelled on drop: the scheduler of a source no config names stops.
    stop: CancellationToken,
}

impl std::fmt::Debug for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwksSource")
            .field("issuer", &self.issuer)
            .field("uri", &self.uri)
            .field("keys", &self.keys.load().keys.len())
            .finish_non_exhaustive()
    }
}

impl Drop for JwksSource {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl JwksSource {
    /// A source with no keys yet: nothing is fetched before [`start`](Self::start)
    /// or a token needs a key.
    pub fn new(issuer: &str, uri: http::Uri, allowed: &'static [Algorithm]) -> Self {
        Self {
            issuer: issuer.to_owned(),
            uri,
            allowed,
            keys: ArcSwap::from_pointee(KeySet::default()),
            refresh: Mutex::default(),
            started: AtomicBool::new(false),
            fetches: OnceLock::new(),
            client: OnceLock::new(),
            stop: CancellationToken::new(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The cached set (empty until a fetch succeeded).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Starts the first fetch now (in the background: start-up does not wait
    /// for the issuer) and a scheduler refreshing by `max-age`. Idempotent, so
    /// a reload may call it on sources it kept. Needs a tokio runtime.
    pub fn start(self: &Arc<Self>, fetches: &IntCounterVec) {
        let _ = self.fetches.set(fetches.clone());
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        // Registered before returning, so a request right after start-up joins
        // this fetch instead of starting (and rate-limiting) its own.
        self.refresh(false);
        tokio::spawn(schedule(Arc::downgrade(self), self.stop.clone()));
    }

    /// After a token's `kid` (or `alg`) found no key: refreshes unless a
    /// token-triggered refresh started less than [`ON_DEMAND_INTERVAL`] ago,
    /// joining the fetch in flight if any, and waits for it at most
    /// [`REFRESH_WAIT`].
    pub async fn refresh_on_demand(self: &Arc<Self>) {
        if let Some(mut done) = self.refresh(true) {
            let _ = tokio::time::timeout(REFRESH_WAIT, done.wait_for(|d| *d)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Refresh> {
        self.refresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The fetch in flight (started here if none and allowed): `None` when a
    /// token-triggered refresh is rate-limited.
    fn refresh(self: &Arc<Self>, on_demand: bool) -> Option<watch::Receiver<bool>> {
        let mut state = self.lock();
        // A sender gone without a word (its task died) is no fetch in flight.
        if let Some(rx) = state
            .inflight
            .as_ref()
            .filter(|rx| rx.has_changed().is_ok())
        {
            return Some(rx.clone());
        }
        let now = Instant::now();
        if on_demand {
            if state
                .last_on_demand
                .is_some_and(|t| now.duration_since(t) < ON_DEMAND_INTERVAL)
            {
                return None;
            }
            state.last_on_demand = Some(now);
        }
        let (tx, rx) = watch::channel(false);
        state.inflight = Some(rx.clone());
        drop(state);
        // Spawned, not awaited: a request that gives up (or is cancelled) does
        // not cancel the fetch the others wait for.
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let result = this.fetch().await;
            this.store(result);
            this.lock().inflight = None;
            let _ = tx.send(true);
        });
        Some(rx)
    }

    /// Keeps a good set (and when to refresh it); on failure keeps the last
    /// one. Counts the fetch either way.
    fn store(&self, result: Result<(KeySet, usize, Duration), FetchError>) {
        let outcome = if result.is_ok() { "ok" } else { "error" };
        if let Some(c) = self.fetches.get() {
            c.with_label_values(&[self.issuer.as_str(), outcome]).inc();
        }
        let now = Instant::now();
        match result {
            Ok((set, skipped, max_age)) => {
                tracing::debug!(
                    issuer = %self.issuer,
                    uri = %self.uri,
                    keys = set.keys.len(),
                    skipped,
                    ?max_age,
                    "JWK Set fetched"
                );
                self.keys.store(Arc::new(set));
                let mut state = self.lock();
                state.failures = 0;
                state.next_due = Some(now + max_age);
            }
            Err(e) => {
                let kept = self.keys.load().keys.len();
                tracing::warn!(
                    issuer = %self.issuer,
                    uri = %self.uri,
                    kept_keys = kept,
                    "JWK Set fetch failed; keeping the last good set: {e}"
                );
                let mut state = self.lock();
                state.failures = state.failures.saturating_add(1);
                let backoff = RETRY_MIN
                    .saturating_mul(1 << state.failures.min(8).saturating_sub(1))
                    .min(DEFAULT_MAX_AGE);
                state.next_due = Some(now + backoff);
            }
        }
    }

    fn client(&self) -> Result<&HttpsClient, FetchError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let provider = rustls::crypto::ring::default_provider();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(provider)
            .map_err(|e| FetchError::Tls(e.to_string()))?;
        // `https_or_http` only when the URI is http, which config allowed.
        let connector = if self.uri.scheme_str() == Some("https") {
            builder.https_only()
        } else {
            builder.https_or_http()
        }
        .enable_http1()
        .build();
        // No pooling: fetches are minutes apart, and an idle connection would
        // tie the client to the runtime that opened it.
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        Ok(self.client.get_or_init(|| client))
    }

    /// One bounded GET of the URI: the parsed set, the keys skipped, `max-age`.
    async fn fetch(&self) -> Result<(KeySet, usize, Duration), FetchError> {
        let client = self.client()?;
        let request = http::Request::get(self.uri.clone())
            .header(
                http::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .header(
                http::header::USER_AGENT,
                concat!("hubbub/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::<Bytes>::new())
            .map_err(|e| FetchError::Request(e.to_string()))?;
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| FetchError::Request(e.to_string()))?;
            if response.status() != http::StatusCode::OK {
                return Err(FetchError::Status(response.status()));
            }
            let (parts, body) = response.into_parts();
            let declared = parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
                return Err(FetchError::TooLarge);
            }
            let body = Limited::new(body, MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        FetchError::TooLarge
                    } else {
                        FetchError::Request(e.to_string())
                    }
                })?
                .to_bytes();
            Ok((parts.headers, body))
        };
        let (headers, body) = tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout)??;
        let (set, skipped) = KeySet::parse(&body, self.allowed)?;
        Ok((set, skipped, max_age(&headers)))
    }
}

/// Refreshes a source when its `max-age` (or the failure backoff) is up,
/// until the source is dropped. Holds the source only weakly while asleep.
async fn schedule(source: Weak<JwksSource>, stop: CancellationToken) {
    loop {
        let Some(this) = source.upgrade() else { return };
        if let Some(mut done) = this.refresh(false) {
            // Bounded by FETCH_TIMEOUT; a stop still ends the wait.
            tokio::select! {
                _ = done.wait_for(|d| *d) => {}
                () = stop.cancelled() => return,
            }
        }
        drop(this);
        // A token-triggered refresh in between moves `next_due` later: sleep on.
        loop {
            let Some(this) = source.upgrade() else { return };
            let due = this.lock().next_due;
            drop(this);
            let due = match due {
                Some(due) if due > Instant::now() => due,
                _ => break,
            };
            tokio::select! {
                () = tokio::time::sleep_until(due.into()) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ALLOWED: &[Algorithm] = &[
        Algorithm::EdDSA,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::RS256,
        Algorithm::PS256,
    ];

    fn b64(n: usize, fill: u8) -> String {
        URL_SAFE_NO_PAD.encode(vec![fill; n])
    }

    fn ec(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(32, 1), "y": b64(32, 2)})
    }

    fn rsa(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "n": b64(256, 0xc3), "e": "AQAB"})
    }

    fn ed(kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(32, 7)})
    }

    fn parse(keys: Vec<Value>) -> Result<(KeySet, usize), FetchError> {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes(), ALLOWED)
    }

    fn kids(set: &KeySet) -> Vec<&str> {
        set.keys.iter().filter_map(|k| k.kid.as_deref()).collect()
    }

    #[test]
    fn bad_keys_are_skipped_not_fatal() {
        let (set, skipped) = parse(vec![
            ec("ec"),
            json!("not an object"),
            json!({"kty": "oct", "k": b64(32, 1), "kid": "hmac"}),
            json!({"kty": "XYZ", "kid": "unknown"}),
            json!({"kty": "EC", "crv": "P-256", "kid": "short", "x": b64(31, 1), "y": b64(32, 2)}),
            json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": b64(66, 1), "y": b64(66, 2)}),
            json!({"kty": "RSA", "kid": "weak", "n": b64(128, 0xc3), "e": "AQAB"}),
            json!({"kty": "RSA", "kid": "nob64", "n": "!!!", "e": "AQAB"}),
            json!({"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": b64(32, 1)}),
            rsa("rsa"),
            ed("ed"),
        ])
        .unwrap();
        assert_eq!(kids(&set), ["ec", "rsa", "ed"]);
        assert_eq!(skipped, 8);
        let algs: Vec<Algorithm> = set.keys.iter().map(|k| k.alg).collect();
        assert_eq!(
            algs,
            [Algorithm::ES256, Algorithm::RS256, Algorithm::EdDSA],
            "the key type's natural algorithm when alg is absent"
        );
    }

    #[test]
    fn use_enc_and_other_ops_are_skipped() {
        let mut enc = rsa("enc");
        enc["use"] = json!("enc");
        let mut sig = rsa("sig");
        sig["use"] = json!("sig");
        let mut wrap = ec("wrap");
        wrap["key_ops"] = json!(["wrapKey"]);
        let mut verify = ec("verify");
        verify["key_ops"] = json!(["verify"]);
        let (set, skipped) = parse(vec![enc, sig, wrap, verify]).unwrap();
        assert_eq!(kids(&set), ["sig", "verify"]);
        assert_eq!(skipped, 2);
    }

    #[test]
    fn alg_must_fit_the_key_and_the_allowlist() {
        let with_alg = |mut k: Value, alg: &str| {
            k["alg"] = json!(alg);
            k
        };
        let (set, skipped) = parse(vec![
            with_alg(rsa("rs-as-es"), "ES256"),
            with_alg(ec("es-as-rs"), "RS256"),
            with_alg(ec("es-as-es384"), "ES384"),
            with_alg(ed("ed-as-es"), "ES256"),
            with_alg(rsa("hs"), "HS256"),
            with_alg(rsa("rs512"), "RS512"), // not in this test's allowlist
            with_alg(rsa("enc-alg"), "RSA-OAEP"),
            with_alg(rsa("ps"), "PS256"),
            with_alg(ec("es"), "ES256"),
        ])
        .unwrap();
        assert_eq!(kids(&set), ["ps", "es"]);
        assert_eq!(skipped, 7);
    }

    #[test]
    fn at_most_64_keys_are_kept() {
        let keys: Vec<Value> = (0..100).map(|i| ec(&format!("k{i}"))).collect();
        let (set, skipped) = parse(keys).unwrap();
        assert_eq!(set.keys.len(), MAX_KEYS);
        assert_eq!(set.keys[63].kid.as_deref(), Some("k63"));
        assert_eq!(skipped, 36);
    }

    #[test]
    fn garbage_and_keyless_sets_fail() {
        assert!(matches!(
            KeySet::parse(b"<html>", ALLOWED),
            Err(FetchError::NotAJwkSet(_))
        ));
        assert!(matches!(
            KeySet::parse(b"{\"keys\": {}}", ALLOWED),
            Err(FetchError::NotAJwkSet(_))
        ));
        assert!(matches!(
            parse(vec![json!({"kty": "oct", "k": "AAAA"})]),
            Err(FetchError::NoUsableKey(1))
        ));
        assert!(matches!(parse(vec![]), Err(FetchError::NoUsableKey(0))));
    }

    #[test]
    fn max_age_is_clamped() {
        let headers = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::CACHE_CONTROL, v.parse().unwrap());
            h
        };
        assert_eq!(max_age(&http::HeaderMap::new()), DEFAULT_MAX_AGE);
        assert_eq!(
            max_age(&headers("public, max-age=600")),
            Duration::from_secs(600)
        );
        assert_eq!(max_age(&headers("max-age=0")), MIN_MAX_AGE);
        assert_eq!(max_age(&headers("max-age=5")), MIN_MAX_AGE);
        assert_eq!(max_age(&headers("Max-Age=999999999")), MAX_MAX_AGE);
        assert_eq!(max_age(&headers("max-age=soon")), DEFAULT_MAX_AGE);
        assert_eq!(max_age(&headers("no-store")), DEFAULT_MAX_AGE);
    }

    #[test]
    fn candidates_by_kid_then_alg() {
        let (set, _) = parse(vec![ec("a"), rsa("b"), ec("c")]).unwrap();
        let kids_of = |kid, alg| {
            let (keys, known) = set.candidates(kid, alg);
            let ks: Vec<String> = keys.iter().filter_map(|k| k.kid.clone()).collect();
            (ks, known)
        };
        assert_eq!(
            kids_of(Some("a"), Algorithm::ES256),
            (vec!["a".into()], true)
        );
        assert_eq!(
            kids_of(Some("b"), Algorithm::ES256),
            (vec![], true),
            "a known kid of another algorithm: no key, no refresh"
        );
        assert_eq!(kids_of(Some("z"), Algorithm::ES256), (vec![], false));
        assert_eq!(
            kids_of(None, Algorithm::ES256),
            (vec!["a".into(), "c".into()], true)
        );
        assert_eq!(kids_of(None, Algorithm::EdDSA), (vec![], false));
    }

    /// The HTTPS client (rustls, ring, webpki roots) builds, and an issuer
    /// that does not answer is an error, not a panic nor an empty set.
    #[tokio::test]
    async fn an_unreachable_https_issuer_is_a_request_error() {
        let uri = check_uri("https://127.0.0.1:1/jwks.json", false).unwrap();
        let source = Arc::new(JwksSource::new("https://i.example", uri, ALLOWED));
        match source.fetch().await {
            Err(FetchError::Request(_)) => {}
            other => panic!("{other:?}"),
        }
        source.refresh_on_demand().await;
        assert!(source.keys().keys.is_empty());
    }

    #[test]
    fn uris() {
        assert!(check_uri("https://issuer.example/jwks.json", false).is_ok());
        assert_eq!(
            check_uri("http://127.0.0.1:9/jwks", false),
            Err(UriError::Insecure("http://127.0.0.1:9/jwks".into()))
        );
        assert!(check_uri("http://127.0.0.1:9/jwks", true).is_ok());
        for bad in ["ftp://x/jwks", "/jwks", "not a uri", "https:///jwks"] {
            assert!(
                matches!(check_uri(bad, true), Err(UriError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
