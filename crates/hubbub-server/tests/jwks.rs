//! Trusted issuers whose keys come from a JWK Set (`ISSUER|jwks|URI`), over
//! real HTTP: a local JWKS server whose set, status and liveness each test
//! changes at runtime (and which counts the requests it gets), and a real hub.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap as AxumHeaders, HeaderValue, StatusCode as AxumStatus, header};
use axum::response::IntoResponse;
use hubbub_proto::token::{access_token_claims, mint_with_header};
use hubbub_testkit::{
    Config, HttpResponse, SseClient, StatusCode, TestHub, WAIT, config, eventually,
};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "https://example.com/books/1";
const RESOURCE: &str = "https://hub.example/.well-known/mercure";
const ISS: &str = "https://jwks-issuer.example";
const OTHER_ISS: &str = "https://other-issuer.example";

const ES_PRIV: &str = include_str!("keys/es256.key");
const ES_PUB: &str = include_str!("keys/es256.pub");
const ES_JWK: &str = include_str!("keys/es256.jwk.json");
const ES2_PRIV: &str = include_str!("keys/es256-2.key");
const ES2_JWK: &str = include_str!("keys/es256-2.jwk.json");
const ED_PRIV: &str = include_str!("keys/ed25519.key");
const ED_JWK: &str = include_str!("keys/ed25519.jwk.json");
const RS_PRIV: &str = include_str!("keys/rs256.key");
const RS_JWK: &str = include_str!("keys/rs256.jwk.json");

/// What the JWKS server answers, changeable while it runs.
struct Served {
    status: AxumStatus,
    body: String,
    cache_control: Option<&'static str>,
    /// Sent in chunks without `Content-Length`, so only the read cap stops it.
    chunked: bool,
}

#[derive(Clone)]
struct Shared {
    served: Arc<Mutex<Served>>,
    hits: Arc<AtomicUsize>,
}

/// A JWK Set on `http://127.0.0.1:PORT/jwks.json`.
struct JwksServer {
    addr: std::net::SocketAddr,
    shared: Shared,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl JwksServer {
    async fn start(keys: Vec<Value>) -> Self {
        let shared = Shared {
            served: Arc::new(Mutex::new(Served {
                status: AxumStatus::OK,
                body: set(keys),
                cache_control: None,
                chunked: false,
            })),
            hits: Arc::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .route("/jwks.json", axum::routing::get(serve))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .unwrap();
            }
        });
        Self {
            addr,
            shared,
            stop,
            task: Some(task),
        }
    }

    fn uri(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    fn hits(&self) -> usize {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Served) -> R) -> R {
        f(&mut self.shared.served.lock().unwrap())
    }

    fn set_keys(&self, keys: Vec<Value>) {
        self.with(|s| {
            s.status = AxumStatus::OK;
            s.body = set(keys);
        });
    }

    fn set_body(&self, status: AxumStatus, body: String) {
        self.with(|s| {
            s.status = status;
            s.body = body;
            s.chunked = false;
        });
    }

    fn set_chunked_body(&self, body: String) {
        self.with(|s| {
            s.status = AxumStatus::OK;
            s.body = body;
            s.chunked = true;
        });
    }

    /// Stops listening: the hub's next fetch finds the port closed.
    async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
        }
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(State(shared): State<Shared>) -> impl IntoResponse {
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let served = shared.served.lock().unwrap();
    let mut headers = AxumHeaders::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    if let Some(cc) = served.cache_control {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cc));
    }
    let body = if served.chunked {
        let chunks: Vec<Result<bytes::Bytes, std::convert::Infallible>> = served
            .body
            .as_bytes()
            .chunks(16 * 1024)
            .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
            .collect();
        axum::body::Body::from_stream(futures_util::stream::iter(chunks))
    } else {
        axum::body::Body::from(served.body.clone())
    };
    (served.status, headers, body)
}

fn set(keys: Vec<Value>) -> String {
    json!({ "keys": keys }).to_string()
}

/// A public JWK from `tests/keys` with this `kid` and `alg`.
fn jwk(file: &str, kid: &str, alg: &str) -> Value {
    let mut k: Value = serde_json::from_str(file).unwrap();
    k["kid"] = json!(kid);
    k["alg"] = json!(alg);
    k["use"] = json!("sig");
    k
}

fn es1() -> Value {
    jwk(ES_JWK, "es-1", "ES256")
}

fn es2() -> Value {
    jwk(ES2_JWK, "es-2", "ES256")
}

/// A hub trusting `issuers` (`(iss, JWKS URI)`), plain HTTP allowed.
fn hub_config(issuers: &[(&str, &str)]) -> Config {
    Config {
        anonymous: false,
        oauth_issuers: issuers
            .iter()
            .map(|(iss, uri)| format!("{iss}|jwks|{uri}"))
            .collect(),
        oauth_jwks_allow_http: true,
        oauth_resource: Some(RESOURCE.into()),
        ..config()
    }
}

/// An at+jwt of `iss` granting publish and subscribe on every topic, signed
/// with `alg` and the PEM `key`, naming `kid` if given.
fn token(iss: &str, alg: Algorithm, key: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.typ = Some("at+jwt".into());
    header.kid = kid.map(str::to_owned);
    let claims = access_token_claims(
        iss,
        RESOURCE,
        &[(&["publish", "subscribe"], &["*"])],
        Duration::from_secs(300),
    );
    mint_with_header(&header, key, &claims).unwrap()
}

fn es_token(kid: &str) -> String {
    token(ISS, Algorithm::ES256, ES_PRIV, Some(kid))
}

async fn publish(hub: &TestHub, token: &str) -> HttpResponse {
    hubbub_testkit::publish(&hub.url(), token, &[("topic", TOPIC), ("data", "x")]).await
}

#[track_caller]
fn assert_ok(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, StatusCode::OK, "{what}: {}", r.body);
}

#[track_caller]
fn assert_invalid_token(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge:?}"
    );
}

fn fetches(iss: &str, result: &str) -> String {
    format!("hubbub_jwks_fetches_total{{issuer=\"{iss}\",result=\"{result}\"}}")
}

/// A hub trusting [`ISS`] through `jwks`, once its start-up fetch is done.
async fn started_hub(jwks: &JwksServer) -> TestHub {
    let hub = TestHub::start(hub_config(&[(ISS, &jwks.uri())])).await;
    hub.wait_metric_at_least(&fetches(ISS, "ok"), 1.0).await;
    assert_eq!(jwks.hits(), 1, "one fetch at start-up");
    hub
}

#[tokio::test]
async fn tokens_signed_by_a_key_of_the_set_publish_and_subscribe() {
    let jwks = JwksServer::start(vec![
        es1(),
        jwk(ED_JWK, "ed-1", "EdDSA"),
        jwk(RS_JWK, "rs-1", "RS256"),
    ])
    .await;
    let hub = started_hub(&jwks).await;
    for (alg, key, kid) in [
        (Algorithm::ES256, ES_PRIV, "es-1"),
        (Algorithm::EdDSA, ED_PRIV, "ed-1"),
        (Algorithm::RS256, RS_PRIV, "rs-1"),
    ] {
        let t = token(ISS, alg, key, Some(kid));
        assert_ok(&publish(&hub, &t).await, kid);
        let sse = SseClient::subscribe(&hub.url(), &[TOPIC], Some(&t)).await;
        assert_eq!(sse.status, StatusCode::OK, "{kid}");
    }
    // Without a kid, the keys of the token's algorithm are tried.
    let no_kid = token(ISS, Algorithm::ES256, ES_PRIV, None);
    assert_ok(&publish(&hub, &no_kid).await, "no kid");
    // A key the set does not hold (signed by es-2, claiming es-1) fails.
    let forged = token(ISS, Algorithm::ES256, ES2_PRIV, Some("es-1"));
    assert_invalid_token(
        &publish(&hub, &forged).await,
        "another key under a known kid",
    );
    assert_eq!(jwks.hits(), 1, "every key was served from the cache");
    assert_eq!(hub.metric(&fetches(ISS, "ok")).await, Some(1.0));
}

#[tokio::test]
async fn rotation_a_new_kid_refreshes_the_set_and_the_old_key_stops_working() {
    let jwks = JwksServer::start(vec![es1()]).await;
    let hub = started_hub(&jwks).await;
    assert_ok(&publish(&hub, &es_token("es-1")).await, "before rotation");

    jwks.set_keys(vec![es2()]);
    let new = token(ISS, Algorithm::ES256, ES2_PRIV, Some("es-2"));
    assert_ok(&publish(&hub, &new).await, "the new kid after rotation");
    assert_eq!(jwks.hits(), 2, "the unknown kid refreshed the set once");
    let sse = SseClient::subscribe(&hub.url(), &[TOPIC], Some(&new)).await;
    assert_eq!(sse.status, StatusCode::OK);

    assert_invalid_token(
        &publish(&hub, &es_token("es-1")).await,
        "the rotated-out key",
    );
    assert_eq!(jwks.hits(), 2, "the refresh is rate-limited");
}

#[tokio::test]
async fn a_spray_of_unknown_kids_fetches_at_most_once_per_10s() {
    let jwks = JwksServer::start(vec![es1()]).await;
    let hub = started_hub(&jwks).await;
    let sprayed =
        futures_util::future::join_all(
            (0..60).map(|i| {
                let t = es_token(&format!("random-{i}-{}", uuid_ish(i)));
                let url = hub.url();
                async move {
                    hubbub_testkit::publish(&url, &t, &[("topic", TOPIC), ("data", "x")]).await
                }
            }),
        )
        .await;
    for r in &sprayed {
        assert_invalid_token(r, "a random kid");
    }
    let after_spray = jwks.hits();
    assert!(
        after_spray <= 2,
        "60 random kids caused {} fetches",
        after_spray - 1
    );
    // Even a real new key waits for the rate limit...
    jwks.set_keys(vec![es1(), es2()]);
    let new = token(ISS, Algorithm::ES256, ES2_PRIV, Some("es-2"));
    for _ in 0..5 {
        assert_invalid_token(
            &publish(&hub, &new).await,
            "within 10 s of the last refresh",
        );
    }
    assert_eq!(jwks.hits(), after_spray, "no fetch within the 10 s");
    // ...and is found once it is over.
    tokio::time::sleep(Duration::from_millis(10_300)).await;
    assert_ok(&publish(&hub, &new).await, "after 10 s");
    assert_eq!(jwks.hits(), after_spray + 1);
}

fn uuid_ish(i: u32) -> u64 {
    u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// The issuer down or answering garbage: the last good set still verifies.
#[tokio::test]
async fn an_unreachable_or_broken_issuer_keeps_the_last_good_set() {
    let oversize = {
        // A real set holding es-2, padded past 256 KiB: it must not be read.
        let mut keys = vec![es2()];
        keys.push(json!({"kty": "oct", "k": "A".repeat(300 * 1024)}));
        set(keys)
    };
    for mode in ["500", "garbage", "oversize", "oversize-chunked", "stopped"] {
        let mut jwks = JwksServer::start(vec![es1()]).await;
        let hub = started_hub(&jwks).await;
        match mode {
            "500" => jwks.set_body(AxumStatus::INTERNAL_SERVER_ERROR, set(vec![es2()])),
            "garbage" => jwks.set_body(AxumStatus::OK, "<html>not a JWK Set</html>".into()),
            "oversize" => jwks.set_body(AxumStatus::OK, oversize.clone()),
            "oversize-chunked" => jwks.set_chunked_body(oversize.clone()),
            _ => jwks.stop().await,
        }
        // es-2 is not cached: its token makes the hub try the issuer.
        let new = token(ISS, Algorithm::ES256, ES2_PRIV, Some("es-2"));
        assert_invalid_token(&publish(&hub, &new).await, mode);
        hub.wait_metric_at_least(&fetches(ISS, "error"), 1.0).await;
        if mode != "stopped" {
            assert_eq!(jwks.hits(), 2, "{mode}: the refresh reached the issuer");
        }
        assert_ok(
            &publish(&hub, &es_token("es-1")).await,
            &format!("{mode}: the last good set"),
        );
        assert_eq!(hub.metric(&fetches(ISS, "ok")).await, Some(1.0), "{mode}");
    }
}

/// Start-up does not wait for the issuer: tokens fail until its keys arrive.
#[tokio::test]
async fn an_issuer_down_at_start_up_delays_its_keys_not_the_hub() {
    let jwks = JwksServer::start(vec![]).await;
    jwks.set_body(AxumStatus::SERVICE_UNAVAILABLE, String::new());
    let hub = TestHub::start(hub_config(&[(ISS, &jwks.uri())])).await;
    assert_invalid_token(&publish(&hub, &es_token("es-1")).await, "no keys yet");
    jwks.set_keys(vec![es1()]);
    // The scheduler retries (5 s), and a token may refresh again after 10 s.
    eventually(Duration::from_secs(15), "the keys arrive", || async {
        (publish(&hub, &es_token("es-1")).await.status == StatusCode::OK).then_some(())
    })
    .await;
}

#[tokio::test]
async fn alg_must_fit_the_key() {
    let jwks = JwksServer::start(vec![es1(), jwk(RS_JWK, "rs-1", "RS256")]).await;
    let hub = started_hub(&jwks).await;
    for (what, t) in [
        (
            "an RS256 token naming the EC key",
            token(ISS, Algorithm::RS256, RS_PRIV, Some("es-1")),
        ),
        (
            "an ES256 token naming the RSA key",
            token(ISS, Algorithm::ES256, ES_PRIV, Some("rs-1")),
        ),
        (
            "an HS256 token keyed with the EC public key (algorithm confusion)",
            token(ISS, Algorithm::HS256, ES_PUB, Some("es-1")),
        ),
        (
            "an EdDSA token without kid (no EdDSA key in the set)",
            token(ISS, Algorithm::EdDSA, ED_PRIV, None),
        ),
    ] {
        assert_invalid_token(&publish(&hub, &t).await, what);
    }
    assert_ok(&publish(&hub, &es_token("es-1")).await, "the fitting key");
    assert_ok(
        &publish(&hub, &token(ISS, Algorithm::RS256, RS_PRIV, Some("rs-1"))).await,
        "the RSA key",
    );
}

#[tokio::test]
async fn one_issuers_set_cannot_verify_another_issuers_token() {
    let a = JwksServer::start(vec![es1()]).await;
    let b = JwksServer::start(vec![es2()]).await;
    let hub = TestHub::start(hub_config(&[(ISS, &a.uri()), (OTHER_ISS, &b.uri())])).await;
    hub.wait_metric_at_least(&fetches(ISS, "ok"), 1.0).await;
    hub.wait_metric_at_least(&fetches(OTHER_ISS, "ok"), 1.0)
        .await;
    let own = |iss, key, kid| token(iss, Algorithm::ES256, key, Some(kid));
    assert_ok(
        &publish(&hub, &own(ISS, ES_PRIV, "es-1")).await,
        "ISS's key",
    );
    assert_ok(
        &publish(&hub, &own(OTHER_ISS, ES2_PRIV, "es-2")).await,
        "OTHER_ISS's key",
    );
    assert_invalid_token(
        &publish(&hub, &own(OTHER_ISS, ES_PRIV, "es-1")).await,
        "OTHER_ISS's token signed with ISS's key",
    );
    assert_invalid_token(
        &publish(&hub, &own(ISS, ES2_PRIV, "es-2")).await,
        "ISS's token signed with OTHER_ISS's key",
    );
}

#[tokio::test]
async fn static_keys_and_a_jwks_mix_for_one_issuer() {
    let jwks = JwksServer::start(vec![es2()]).await;
    let mut c = hub_config(&[(ISS, &jwks.uri())]);
    c.oauth_issuers.push(format!("{ISS}|ES256|{ES_PUB}"));
    let hub = TestHub::start(c).await;
    hub.wait_metric_at_least(&fetches(ISS, "ok"), 1.0).await;
    assert_ok(
        &publish(&hub, &token(ISS, Algorithm::ES256, ES_PRIV, None)).await,
        "the static key",
    );
    assert_ok(
        &publish(&hub, &token(ISS, Algorithm::ES256, ES2_PRIV, Some("es-2"))).await,
        "the JWKS key",
    );
}

/// Plain-HTTP JWKS URIs need `oauth_jwks_allow_http`; nothing is fetched at
/// config parse time.
#[tokio::test]
async fn http_jwks_uris_are_refused_without_the_allow_option() {
    let jwks = JwksServer::start(vec![es1()]).await;
    let refused = Config {
        oauth_jwks_allow_http: false,
        ..hub_config(&[(ISS, &jwks.uri())])
    };
    match refused.settings() {
        Err(hubbub_server::ConfigError::Invalid { key, reason }) => {
            assert_eq!(key, "oauth_issuers");
            assert!(reason.contains("oauth_jwks_allow_http"), "{reason}");
        }
        other => panic!("an http JWKS URI was accepted: {other:?}"),
    }
    for bad in ["ftp://x.example/jwks", "not a uri"] {
        assert!(
            hub_config(&[(ISS, bad)]).settings().is_err(),
            "{bad} is no JWKS URI"
        );
    }
    let https = Config {
        oauth_jwks_allow_http: false,
        ..hub_config(&[(ISS, "https://issuer.example/jwks.json")])
    };
    assert!(https.settings().is_ok());
    assert!(hub_config(&[(ISS, &jwks.uri())]).settings().is_ok());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(jwks.hits(), 0, "parsing the config fetches nothing");
}

/// A reload naming the same JWKS URI keeps the cached set: no refetch, and
/// no moment without keys even with the issuer down. A new URI is fetched.
#[tokio::test]
async fn a_reload_keeps_the_set_of_an_unchanged_uri() {
    let mut jwks = JwksServer::start(vec![es1()]).await;
    let hub = started_hub(&jwks).await;
    jwks.stop().await;
    let same = hub_config(&[(ISS, &jwks.uri())]);
    hub.server().reload(same.settings().unwrap());
    assert_ok(
        &publish(&hub, &es_token("es-1")).await,
        "right after the reload, the issuer down",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        hub.metric(&fetches(ISS, "error")).await.unwrap_or(0.0),
        0.0,
        "the reload tried no fetch"
    );
    assert_eq!(jwks.hits(), 1);

    // Another URI for the issuer: its set replaces the old one.
    let moved = JwksServer::start(vec![es2()]).await;
    hub.server()
        .reload(hub_config(&[(ISS, &moved.uri())]).settings().unwrap());
    eventually(WAIT, "the new URI is fetched", || async {
        (moved.hits() >= 1).then_some(())
    })
    .await;
    let new = token(ISS, Algorithm::ES256, ES2_PRIV, Some("es-2"));
    assert_ok(&publish(&hub, &new).await, "the new set");
    assert_eq!(moved.hits(), 1);
}
