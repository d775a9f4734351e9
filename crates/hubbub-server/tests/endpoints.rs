//! The hub's other faces: CORS (configured origins only, preflight), the `/`
//! page, health, readiness and metrics.

use hubbub_testkit::{Config, SseClient, StatusCode, TestHub, client, config, get, send};

const TOPIC: &str = "https://example.com/books/1";
const APP: &str = "https://app.example";

#[tokio::test]
async fn cors_answers_configured_origins_only() {
    let hub = TestHub::start(Config {
        cors_origins: vec![APP.into(), "http://localhost:3000".into()],
        ..config()
    })
    .await;
    let health = format!("{}/healthz", hub.base_url());

    for origin in [APP, "http://localhost:3000"] {
        let r = send(client().get(&health).header("origin", origin)).await;
        assert_eq!(r.header("access-control-allow-origin"), Some(origin));
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    }
    let foreign = send(
        client()
            .get(&health)
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(foreign.status, StatusCode::OK);
    assert_eq!(foreign.header("access-control-allow-origin"), None);
    assert_eq!(foreign.header("access-control-allow-credentials"), None);

    // The event stream itself carries the headers too.
    let sse = SseClient::connect(
        client()
            .get(hub.subscribe_url(&[TOPIC]))
            .header("origin", APP),
    )
    .await;
    assert_eq!(sse.status, StatusCode::OK);
    assert_eq!(sse.header("access-control-allow-origin"), Some(APP));
    assert_eq!(sse.header("access-control-allow-credentials"), Some("true"));
    // Polyfill clients read the resume cursor of both protocol generations.
    assert_eq!(
        sse.header("access-control-expose-headers"),
        Some("last-event-id, mercure-last-event-id, link")
    );
}

#[tokio::test]
async fn cors_preflight() {
    let hub = TestHub::start(Config {
        cors_origins: vec![APP.into()],
        ..config()
    })
    .await;
    let preflight = |origin: &str| {
        client()
            .request(hubbub_testkit::reqwest::Method::OPTIONS, hub.url())
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization, last-event-id, cache-control",
            )
    };
    let r = send(preflight(APP)).await;
    assert!(r.status.is_success(), "preflight status {}", r.status);
    assert_eq!(r.header("access-control-allow-origin"), Some(APP));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let methods = r
        .header("access-control-allow-methods")
        .unwrap_or_default()
        .to_ascii_uppercase();
    assert!(
        methods.contains("GET") && methods.contains("POST"),
        "{methods:?}"
    );
    let allowed = r
        .header("access-control-allow-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in ["authorization", "cache-control", "last-event-id"] {
        assert!(allowed.contains(h), "{h} missing from {allowed:?}");
    }

    let foreign = send(preflight("https://evil.example")).await;
    assert_eq!(foreign.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn no_cors_headers_without_configured_origins() {
    let hub = TestHub::start(config()).await;
    let r = send(
        client()
            .get(format!("{}/healthz", hub.base_url()))
            .header("origin", APP),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn health_and_readiness() {
    let hub = TestHub::start(config()).await;
    let health = get(&format!("{}/healthz", hub.base_url())).await;
    assert_eq!(health.status, StatusCode::OK);
    let ready = get(&format!("{}/readyz", hub.base_url())).await;
    assert_eq!(ready.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_subscribers_and_updates() {
    let hub = TestHub::start(config()).await;
    let text = hub.metrics().await;
    for name in [
        "hubbub_subscribers",
        "hubbub_updates_published_total",
        "hubbub_slow_consumer_disconnects_total",
        "hubbub_fanout_backlog",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    assert_eq!(hub.metric("hubbub_subscribers").await, Some(0.0));
    assert_eq!(
        hub.metric("hubbub_updates_published_total").await,
        Some(0.0)
    );

    let mut sub = hub.subscribe(&[TOPIC]).await;
    hub.publish_ok(&[("topic", TOPIC)]).await;
    hub.publish_ok(&[("topic", TOPIC)]).await;
    sub.events(2).await;
    assert_eq!(hub.metric("hubbub_subscribers").await, Some(1.0));
    assert_eq!(
        hub.metric("hubbub_updates_published_total").await,
        Some(2.0)
    );
    hub.wait_metric_at_least("hubbub_updates_delivered_total", 2.0)
        .await;
}

#[tokio::test]
async fn the_index_page_speaks_event_source() {
    let hub = TestHub::start(config()).await;
    let page = get(&format!("{}/", hub.base_url())).await;
    assert_eq!(page.status, StatusCode::OK);
    let ct = page.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{ct:?}");
    assert!(page.body.contains("EventSource"));
    // Same-origin fetch and EventSource must not be blocked by a CSP.
    if let Some(csp) = page.header("content-security-policy") {
        assert!(
            !csp.contains("connect-src 'none'") && !csp.contains("default-src 'none'"),
            "{csp:?}"
        );
    }
}
