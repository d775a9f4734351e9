//! The two protocol generations over real HTTP: a hub without `compat_0x`
//! serves Mercure 1.0 clients only, and refuses every 0.x form loudly (a 0.x
//! token would skip the 1.0 checks on `typ`, `iss`, `aud` and `exp`); with
//! `compat_0x` both generations are served side by side.

use std::time::Duration;

use hubbub_proto::token::{access_token_claims, mint_access_token};
use hubbub_testkit::{
    Config, HttpResponse, KEY, SseClient, StatusCode, TestHub, client, config, publisher, send,
    subscriber,
};

const TOPIC: &str = "https://example.com/books/1";
const RESOURCE: &str = "https://hub.example/.well-known/mercure";
const ISS: &str = "https://issuer.example";
const SECRET: &str = "issuer-secret-0123456789abcdef0123";
const WAIT: Duration = Duration::from_secs(5);

/// Trusted issuer [`ISS`], anonymous subscribers, and `compat_0x` as given.
fn hub_config(compat_0x: bool) -> Config {
    let base = Config {
        oauth_issuers: vec![format!("{ISS}|HS256|{SECRET}")],
        oauth_resource: Some(RESOURCE.into()),
        anonymous: true,
        ..config()
    };
    if compat_0x {
        base
    } else {
        Config {
            compat_0x: false,
            jwt_key: None,
            ..base
        }
    }
}

fn access_token(actions: &[&str]) -> String {
    let claims = access_token_claims(ISS, RESOURCE, &[(actions, &["*"])], WAIT * 60);
    mint_access_token("HS256", SECRET, &claims).unwrap()
}

async fn publish(hub: &TestHub, token: &str, form: &[(&str, &str)]) -> HttpResponse {
    hubbub_testkit::publish(&hub.url(), token, form).await
}

#[track_caller]
fn assert_status(r: &HttpResponse, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
}

#[tokio::test]
async fn a_1_0_hub_refuses_0_x_subscriptions() {
    let hub = TestHub::start(hub_config(false)).await;
    for (query, what) in [
        ("topic=https://example.com/books/1", "topic="),
        (
            "match=https://example.com/books/1&lastEventID=earliest",
            "lastEventID",
        ),
    ] {
        let r = send(client().get(format!("{}?{query}", hub.url()))).await;
        assert_status(&r, StatusCode::BAD_REQUEST, what);
        assert!(
            r.body.contains("Mercure 0.x parameter"),
            "{what}: {}",
            r.body
        );
    }
    // The 1.0 forms are served.
    let mut sub = SseClient::get(&format!("{}?match={TOPIC}", hub.url())).await;
    assert_eq!(sub.status, StatusCode::OK);
    let r = publish(
        &hub,
        &access_token(&["publish"]),
        &[("topic", TOPIC), ("id", "a")],
    )
    .await;
    assert_status(&r, StatusCode::OK, "1.0 publish");
    assert_eq!(sub.expect_event().await.id.as_deref(), Some("a"));
}

#[tokio::test]
async fn a_1_0_hub_refuses_0_x_tokens_in_every_place() {
    let hub = TestHub::start(hub_config(false)).await;
    // A valid 0.x publisher token (signed with a key the hub does not have
    // anyway): 401 invalid_token, never verified as 0.x.
    let r = publish(&hub, &publisher(KEY), &[("topic", TOPIC)]).await;
    assert_status(&r, StatusCode::UNAUTHORIZED, "0.x publisher token");
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    assert!(r.body.contains("0.x tokens are not accepted"), "{}", r.body);

    // A private subscription with a 0.x token in the header.
    let private_0x = subscriber(KEY, &["*"]);
    let r = SseClient::connect(
        client()
            .get(format!("{}?match={TOPIC}", hub.url()))
            .bearer_auth(&private_0x),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Any token in the query string is a malformed presentation: 400.
    let r = send(client().get(format!(
        "{}?match={TOPIC}&authorization={private_0x}",
        hub.url()
    )))
    .await;
    assert_status(&r, StatusCode::BAD_REQUEST, "query token");
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("error=\"invalid_request\"")
    );

    // The 0.x cookie is not read at all: the subscriber is anonymous and
    // does not get the private update its cookie's token would allow.
    let mut cookie_sub = SseClient::connect(
        client()
            .get(format!("{}?match={TOPIC}", hub.url()))
            .header("cookie", format!("mercureAuthorization={private_0x}")),
    )
    .await;
    assert_eq!(cookie_sub.status, StatusCode::OK);
    let token = access_token(&["publish"]);
    let private = [("topic", TOPIC), ("id", "p"), ("private", "on")];
    assert_status(&publish(&hub, &token, &private).await, StatusCode::OK, "p");
    let public = [("topic", TOPIC), ("id", "q")];
    assert_status(&publish(&hub, &token, &public).await, StatusCode::OK, "q");
    assert_eq!(
        cookie_sub.expect_event().await.id.as_deref(),
        Some("q"),
        "the private update went to a subscriber holding only a 0.x cookie"
    );
}

#[tokio::test]
async fn the_0_x_response_field_only_with_compat() {
    for compat in [false, true] {
        let hub = TestHub::start(hub_config(compat)).await;
        let token = access_token(&["publish"]);
        let r = publish(&hub, &token, &[("topic", TOPIC), ("id", "first")]).await;
        assert_status(&r, StatusCode::OK, "publish");
        let sub = SseClient::get(&format!("{}?match={TOPIC}&last_event_id=first", hub.url())).await;
        assert_eq!(sub.status, StatusCode::OK);
        assert_eq!(sub.header("mercure-last-event-id"), Some("first"));
        assert_eq!(
            sub.header("last-event-id").is_some(),
            compat,
            "compat_0x={compat}"
        );
    }
}

#[tokio::test]
async fn type_mercure_is_reserved_for_either_generation() {
    let hub = TestHub::start(hub_config(true)).await;
    for token in [access_token(&["publish"]), publisher(KEY)] {
        let r = publish(&hub, &token, &[("topic", TOPIC), ("type", "mercure")]).await;
        assert_status(&r, StatusCode::BAD_REQUEST, "type=mercure");
        assert!(r.body.contains("reserved"), "{}", r.body);
    }
}

#[tokio::test]
async fn compat_serves_both_generations_side_by_side() {
    let hub = TestHub::start(hub_config(true)).await;
    let mut v0 = SseClient::get(&format!(
        "{}?topic=https://example.com/books/{{id}}",
        hub.url()
    ))
    .await;
    let mut v1 = SseClient::get(&format!(
        "{}?match_urlpattern=https://example.com/books/:id",
        hub.url()
    ))
    .await;
    assert_eq!((v0.status, v1.status), (StatusCode::OK, StatusCode::OK));
    let a = [("topic", TOPIC), ("id", "from-0x")];
    assert_status(
        &publish(&hub, &publisher(KEY), &a).await,
        StatusCode::OK,
        "0.x",
    );
    let b = [("topic", TOPIC), ("id", "from-1.0")];
    let token = access_token(&["publish"]);
    assert_status(&publish(&hub, &token, &b).await, StatusCode::OK, "1.0");
    for sub in [&mut v0, &mut v1] {
        assert_eq!(sub.ids(2).await, ["from-0x", "from-1.0"]);
    }
}
