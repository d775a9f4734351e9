//! `public_urls` over real HTTP: a listed origin gets the listed identity (a
//! 1.0 token whose `aud` is that URL's hub path works, whatever
//! `X-Forwarded-Proto` claims), an unlisted `Host` gets 421 on every hub
//! endpoint and on the RFC 9728 metadata (so a token minted for another
//! origin cannot be replayed by naming that origin), health and metrics
//! answer on any origin, and bad entries are configuration errors.

use std::time::Duration;

use hubbub_proto::token::{access_token_claims, mint_access_token};
use hubbub_testkit::reqwest::{Method, RequestBuilder};
use hubbub_testkit::{
    Config, HttpResponse, SseClient, StatusCode, TestHub, client, config, encode_form, send,
};
use serde_json::Value;

const ISS: &str = "https://issuer.example";
const SECRET: &str = "public-urls-issuer-secret-0123456789";
const TOPIC: &str = "https://example.com/books/1";
const HUB: &str = "/.well-known/mercure";
const METADATA: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";

/// `https://hub.example` (TLS terminated by a proxy in front) and
/// `http://alt.example:8080`.
fn listed() -> Config {
    Config {
        anonymous: false,
        oauth_issuers: vec![format!("{ISS}|HS256|{SECRET}")],
        public_urls: vec![
            "https://hub.example".into(),
            "http://alt.example:8080/".into(),
        ],
        ..config()
    }
}

/// A 1.0 token for the hub whose resource identifier is `aud`, granting
/// publish and subscribe on every topic.
fn token(aud: &str) -> String {
    let claims = access_token_claims(
        ISS,
        aud,
        &[(&["publish", "subscribe"], &["*"])],
        Duration::from_secs(300),
    );
    mint_access_token("HS256", SECRET, &claims).unwrap()
}

/// `method path` on the test hub's socket, claiming to be for `host`.
fn to(hub: &TestHub, method: Method, path: &str, host: &str) -> RequestBuilder {
    client()
        .request(method, format!("{}{path}", hub.base_url()))
        .header("host", host)
}

async fn publish(hub: &TestHub, host: &str, aud: &str, proto: Option<&str>) -> HttpResponse {
    let mut r = to(hub, Method::POST, HUB, host)
        .bearer_auth(token(aud))
        .form(&[("topic", TOPIC), ("data", "x")]);
    if let Some(p) = proto {
        r = r.header("x-forwarded-proto", p);
    }
    send(r).await
}

async fn metadata(hub: &TestHub, host: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut r = to(hub, Method::GET, METADATA, host);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    send(r).await
}

fn resource_of(r: &HttpResponse) -> String {
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let doc: Value = serde_json::from_str(&r.body).unwrap();
    doc["resource"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_listed_origin_has_the_listed_identity() {
    let hub = TestHub::start(listed()).await;
    let own = "https://hub.example/.well-known/mercure";
    // The connection is plain HTTP and no proxy header says otherwise: the
    // scheme is the listed one.
    assert_eq!(resource_of(&metadata(&hub, "hub.example", &[]).await), own);
    assert_eq!(
        resource_of(&metadata(&hub, "HUB.Example:443", &[]).await),
        own
    );
    assert_eq!(
        publish(&hub, "hub.example", own, None).await.status,
        StatusCode::OK
    );
    let alt = "http://alt.example:8080/.well-known/mercure";
    assert_eq!(
        publish(&hub, "alt.example:8080", alt, None).await.status,
        StatusCode::OK
    );

    // Subscribing with GET (the lean path) and QUERY, private updates included.
    let get = to(
        &hub,
        Method::GET,
        &format!("{HUB}?match={}", enc(TOPIC)),
        "hub.example",
    )
    .bearer_auth(token(own));
    let mut get = SseClient::connect(get).await;
    assert_eq!(get.status, StatusCode::OK);
    let query = to(
        &hub,
        Method::from_bytes(b"QUERY").unwrap(),
        HUB,
        "hub.example",
    )
    .bearer_auth(token(own))
    .header("content-type", "application/x-www-form-urlencoded")
    .body(encode_form(&[("match", TOPIC)]));
    let mut query = SseClient::connect(query).await;
    assert_eq!(query.status, StatusCode::OK);
    let private = to(&hub, Method::POST, HUB, "hub.example")
        .bearer_auth(token(own))
        .form(&[
            ("topic", TOPIC),
            ("data", "x"),
            ("id", "secret"),
            ("private", "on"),
        ]);
    assert_eq!(send(private).await.status, StatusCode::OK);
    assert_eq!(get.ids(1).await, ["secret"]);
    assert_eq!(query.ids(1).await, ["secret"]);
}

#[tokio::test]
async fn forged_forwarding_headers_do_not_move_the_identity() {
    let hub = TestHub::start(listed()).await;
    let own = "https://hub.example/.well-known/mercure";
    let forged = [
        ("x-forwarded-proto", "http"),
        ("x-forwarded-host", "evil.example"),
        ("forwarded", "host=evil.example;proto=http"),
    ];
    assert_eq!(
        resource_of(&metadata(&hub, "hub.example", &forged).await),
        own
    );
    assert_eq!(
        publish(&hub, "hub.example", own, Some("http")).await.status,
        StatusCode::OK,
        "the listed https identity stands"
    );
    let downgraded = publish(
        &hub,
        "hub.example",
        "http://hub.example/.well-known/mercure",
        Some("http"),
    )
    .await;
    assert_eq!(
        downgraded.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        downgraded.body
    );
    // The other way round: an http-only origin cannot be claimed as https.
    let alt = metadata(&hub, "alt.example:8080", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        resource_of(&alt),
        "http://alt.example:8080/.well-known/mercure"
    );
}

#[tokio::test]
async fn unlisted_origins_get_421_on_the_hub_and_its_metadata() {
    let hub = TestHub::start(listed()).await;
    let evil_aud = "https://evil.example/.well-known/mercure";
    let own_addr = hub.addr.to_string();
    for host in [
        "evil.example",
        own_addr.as_str(),
        "hub.example:8443",
        "alt.example",
    ] {
        let r = publish(&hub, host, evil_aud, Some("https")).await;
        assert_eq!(
            r.status,
            StatusCode::MISDIRECTED_REQUEST,
            "publish on {host}"
        );
        let r = metadata(&hub, host, &[]).await;
        assert_eq!(
            r.status,
            StatusCode::MISDIRECTED_REQUEST,
            "metadata on {host}"
        );
        let get = to(
            &hub,
            Method::GET,
            &format!("{HUB}?match={}", enc(TOPIC)),
            host,
        )
        .bearer_auth(token(evil_aud));
        assert_eq!(
            send(get).await.status,
            StatusCode::MISDIRECTED_REQUEST,
            "GET subscribe on {host}"
        );
        let query = to(&hub, Method::from_bytes(b"QUERY").unwrap(), HUB, host)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(encode_form(&[("match", TOPIC)]));
        assert_eq!(
            send(query).await.status,
            StatusCode::MISDIRECTED_REQUEST,
            "QUERY subscribe on {host}"
        );
    }
    let misdirected = hub
        .metric("hubbub_requests_rejected_total{reason=\"misdirected\"}")
        .await;
    assert_eq!(misdirected, Some(16.0));

    // Without the list, the same request is answered (and the forged
    // origin's token accepted: what the list is for).
    let open = TestHub::start(Config {
        public_urls: Vec::new(),
        ..listed()
    })
    .await;
    assert_eq!(
        publish(&open, "evil.example", evil_aud, Some("https"))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_answer_on_any_origin() {
    let hub = TestHub::start(listed()).await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = send(to(&hub, Method::GET, path, "evil.example")).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn a_reload_changes_the_list_at_once() {
    let hub = TestHub::start(listed()).await;
    let evil_aud = "https://evil.example/.well-known/mercure";
    assert_eq!(
        publish(&hub, "evil.example", evil_aud, Some("https"))
            .await
            .status,
        StatusCode::MISDIRECTED_REQUEST
    );
    let widened = Config {
        public_urls: vec!["https://hub.example".into(), "https://evil.example".into()],
        ..listed()
    };
    hub.server().reload(widened.settings().unwrap());
    assert_eq!(
        publish(&hub, "evil.example", evil_aud, None).await.status,
        StatusCode::OK
    );
}

#[test]
fn bad_entries_are_configuration_errors() {
    for entry in [
        "hub.example",
        "ftp://hub.example",
        "https://hub.example/hub",
        "https://hub.example/?x=1",
        "https://hub.example#top",
        "https://user:pass@hub.example",
        "https://",
    ] {
        let c = Config {
            public_urls: vec!["https://fine.example".into(), entry.into()],
            ..listed()
        };
        let err = c.settings().expect_err(entry).to_string();
        assert!(err.contains("public_urls"), "{entry}: {err}");
    }
    for entry in [
        "https://hub.example/",
        "http://127.0.0.1:8080",
        "https://[::1]:8443",
    ] {
        let c = Config {
            public_urls: vec![entry.into()],
            ..listed()
        };
        assert!(c.settings().is_ok(), "{entry}");
    }
}

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    encode_form(&[("x", s)])[2..].to_owned()
}
