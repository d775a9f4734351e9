//! Authorization: every token source for both roles, each refusal and its
//! status, per-role keys, the cookie CSRF guard and anonymous subscribers.

use hubbub_testkit::{
    Config, KEY, SseClient, StatusCode, TestHub, client, config, publisher, send, subscriber,
    token, token_expiring_in, token_with, token_with_claims,
};
use serde_json::json;

const TOPIC: &str = "https://example.com/books/1";
const APP: &str = "https://app.example";

fn form() -> [(&'static str, &'static str); 2] {
    [("topic", TOPIC), ("data", "x")]
}

async fn publish_status(hub: &TestHub, token: &str) -> StatusCode {
    hubbub_testkit::publish(&hub.url(), token, &form())
        .await
        .status
}

async fn subscribe_status(hub: &TestHub, token: &str) -> StatusCode {
    SseClient::connect(client().get(hub.subscribe_url(&[TOPIC])).bearer_auth(token))
        .await
        .status
}

/// One over the protocol's cap on selectors per claim; the last one would match.
fn too_many_selectors() -> Vec<String> {
    let mut list: Vec<String> = (0..1000).map(|i| format!("urn:x:{i}")).collect();
    list.push("*".into());
    list
}

fn private_hub_config() -> Config {
    Config {
        anonymous: false,
        publish_origins: vec![APP.into()],
        ..config()
    }
}

#[tokio::test]
async fn publisher_token_from_header_query_or_cookie() {
    let hub = TestHub::start(private_hub_config()).await;
    let tok = publisher(KEY);
    let body = hubbub_testkit::encode_form(&form());
    let post = |url: String| {
        client()
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
    };

    let header = send(post(hub.url()).bearer_auth(&tok)).await;
    assert_eq!(
        header.status,
        StatusCode::OK,
        "Bearer header: {}",
        header.body
    );

    let query = send(post(format!("{}?authorization={tok}", hub.url()))).await;
    assert_eq!(query.status, StatusCode::OK, "query: {}", query.body);

    let cookie = format!("mercureAuthorization={tok}");
    let from_app = send(
        post(hub.url())
            .header("cookie", &cookie)
            .header("origin", APP),
    )
    .await;
    assert_eq!(from_app.status, StatusCode::OK, "cookie + allowed Origin");

    let no_origin = send(post(hub.url()).header("cookie", &cookie)).await;
    assert_eq!(no_origin.status, StatusCode::FORBIDDEN, "cookie, no Origin");

    let evil = send(
        post(hub.url())
            .header("cookie", &cookie)
            .header("origin", "https://evil.example"),
    )
    .await;
    assert_eq!(evil.status, StatusCode::FORBIDDEN, "cookie, foreign Origin");
}

#[tokio::test]
async fn subscriber_token_from_header_query_or_cookie() {
    let hub = TestHub::start(private_hub_config()).await;
    let tok = subscriber(KEY, &[TOPIC]);
    let url = hub.subscribe_url(&[TOPIC]);
    let mut subs = [
        SseClient::connect(client().get(&url).bearer_auth(&tok)).await,
        SseClient::connect(client().get(format!("{url}&authorization={tok}"))).await,
        SseClient::connect(
            client()
                .get(&url)
                .header("cookie", format!("other=1; mercureAuthorization={tok}")),
        )
        .await,
    ];
    for (i, sub) in subs.iter().enumerate() {
        assert_eq!(sub.status, StatusCode::OK, "source #{i}");
    }
    // Each source carries the claims: the private update reaches all three.
    hub.publish_ok(&[("topic", TOPIC), ("id", "p"), ("private", "1")])
        .await;
    for (i, sub) in subs.iter_mut().enumerate() {
        assert_eq!(sub.expect_event().await.id.as_deref(), Some("p"), "#{i}");
    }
}

#[tokio::test]
async fn a_custom_cookie_name_is_honoured() {
    let hub = TestHub::start(Config {
        cookie_name: "hubToken".into(),
        ..private_hub_config()
    })
    .await;
    let tok = subscriber(KEY, &[TOPIC]);
    let url = hub.subscribe_url(&[TOPIC]);
    let named = SseClient::connect(
        client()
            .get(&url)
            .header("cookie", format!("hubToken={tok}")),
    )
    .await;
    assert_eq!(named.status, StatusCode::OK);
    let default_name = SseClient::connect(
        client()
            .get(&url)
            .header("cookie", format!("mercureAuthorization={tok}")),
    )
    .await;
    assert_eq!(default_name.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn the_first_token_source_found_wins() {
    let hub = TestHub::start(private_hub_config()).await;
    let good = publisher(KEY);
    let bad = publisher("another-key");
    let body = hubbub_testkit::encode_form(&form());
    let post = |query_token: &str, header_token: &str| {
        client()
            .post(format!("{}?authorization={query_token}", hub.url()))
            .bearer_auth(header_token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.clone())
    };
    assert_eq!(send(post(&bad, &good)).await.status, StatusCode::OK);
    assert_eq!(
        send(post(&good, &bad)).await.status,
        StatusCode::UNAUTHORIZED,
        "a bad header token is not rescued by a good query token"
    );
}

#[tokio::test]
async fn publish_refusals() {
    let hub = TestHub::start(private_hub_config()).await;
    let cases = [
        ("no token", String::new(), StatusCode::UNAUTHORIZED),
        ("garbage", "not.a.jwt".to_owned(), StatusCode::UNAUTHORIZED),
        (
            "invalid signature",
            publisher("another-key"),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "expired",
            token_expiring_in(KEY, json!({"publish": ["*"]}), -60),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "not yet valid",
            token_with_claims(
                KEY,
                json!({"mercure": {"publish": ["*"]}, "nbf": hubbub_testkit::unix_now() + 3600}),
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "wrong algorithm",
            token_with(KEY, "HS512", json!({"mercure": {"publish": ["*"]}})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no publish claim",
            token(KEY, json!({"subscribe": ["*"]})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "no mercure claim",
            token_with_claims(KEY, json!({"sub": "x"})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "topic not covered",
            token(
                KEY,
                json!({"publish": ["https://example.com/authors/{id}"]}),
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "empty publish claim",
            token(KEY, json!({"publish": []})),
            StatusCode::FORBIDDEN,
        ),
        (
            "more than 1000 publish selectors",
            token(KEY, json!({"publish": too_many_selectors()})),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "broken template in the claim",
            token(KEY, json!({"publish": ["https://example.com/{id"]})),
            StatusCode::UNAUTHORIZED,
        ),
        // Positive controls: the same request with acceptable tokens.
        (
            "covering template",
            token(KEY, json!({"publish": ["https://example.com/books/{id}"]})),
            StatusCode::OK,
        ),
        (
            "not yet expired",
            token_expiring_in(KEY, json!({"publish": [TOPIC]}), 3600),
            StatusCode::OK,
        ),
    ];
    for (what, tok, want) in cases {
        assert_eq!(publish_status(&hub, &tok).await, want, "{what}");
    }
}

#[tokio::test]
async fn every_topic_of_an_update_must_be_covered() {
    let hub = TestHub::start(config()).await;
    let tok = token(KEY, json!({"publish": [TOPIC]}));
    let alt = "https://example.com/authors/1";
    let r = hubbub_testkit::publish(&hub.url(), &tok, &[("topic", TOPIC), ("topic", alt)]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "uncovered alternate");
    let r = hubbub_testkit::publish(&hub.url(), &tok, &[("topic", TOPIC)]).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn refused_requests_say_why_and_are_counted() {
    let hub = TestHub::start(config()).await;
    let r = hubbub_testkit::publish(&hub.url(), "", &form()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(!r.body.trim().is_empty(), "the body explains the refusal");
    hub.wait_metric_at_least(
        "hubbub_requests_rejected_total{reason=\"unauthorized\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn subscribe_refusals() {
    let closed = TestHub::start(private_hub_config()).await;
    let anonymous = SseClient::get(&closed.subscribe_url(&[TOPIC])).await;
    assert_eq!(
        anonymous.status,
        StatusCode::UNAUTHORIZED,
        "anonymous=false needs a token"
    );
    assert_eq!(
        subscribe_status(&closed, &subscriber(KEY, &[])).await,
        StatusCode::OK,
        "a valid token without claims may subscribe"
    );

    let open = TestHub::start(config()).await;
    let anonymous = SseClient::get(&open.subscribe_url(&[TOPIC])).await;
    assert_eq!(anonymous.status, StatusCode::OK, "anonymous=true");
    for (what, tok) in [
        ("bad signature", subscriber("another-key", &["*"])),
        ("garbage", "garbage".to_owned()),
        (
            "expired",
            token_expiring_in(KEY, json!({"subscribe": ["*"]}), -60),
        ),
        (
            "wrong algorithm",
            token_with(KEY, "HS384", json!({"mercure": {"subscribe": ["*"]}})),
        ),
        (
            "more than 1000 subscribe selectors",
            token(KEY, json!({"subscribe": too_many_selectors()})),
        ),
    ] {
        assert_eq!(
            subscribe_status(&open, &tok).await,
            StatusCode::UNAUTHORIZED,
            "{what}: an invalid token is refused even when anonymous is allowed"
        );
    }
}

#[tokio::test]
async fn each_role_has_its_own_key() {
    let hub = TestHub::start(Config {
        jwt_key: None,
        publisher_jwt_key: Some("publisher-key".into()),
        subscriber_jwt_key: Some("subscriber-key".into()),
        anonymous: false,
        ..config()
    })
    .await;
    assert_eq!(
        publish_status(&hub, &publisher("publisher-key")).await,
        StatusCode::OK
    );
    assert_eq!(
        publish_status(&hub, &publisher("subscriber-key")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        subscribe_status(&hub, &subscriber("subscriber-key", &["*"])).await,
        StatusCode::OK
    );
    assert_eq!(
        subscribe_status(&hub, &subscriber("publisher-key", &["*"])).await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_configured_algorithm_is_required() {
    let hub = TestHub::start(Config {
        jwt_alg: "HS512".into(),
        ..config()
    })
    .await;
    let claims = json!({"mercure": {"publish": ["*"]}});
    assert_eq!(
        publish_status(&hub, &token_with(KEY, "HS512", claims.clone())).await,
        StatusCode::OK
    );
    assert_eq!(
        publish_status(&hub, &token_with(KEY, "HS256", claims)).await,
        StatusCode::UNAUTHORIZED
    );
}

/// Authentication schemes are case-insensitive (RFC 9110, 11.1): `bearer`,
/// `BEARER` and `bEaReR` are the Bearer scheme, for both roles.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let hub = TestHub::start(private_hub_config()).await;
    let (pub_tok, sub_tok) = (publisher(KEY), subscriber(KEY, &["*"]));
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let r = send(
            client()
                .post(hub.url())
                .header("authorization", format!("{scheme} {pub_tok}"))
                .form(&form()),
        )
        .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "publish with {scheme}: {}",
            r.body
        );
        let sse = SseClient::connect(
            client()
                .get(hub.subscribe_url(&[TOPIC]))
                .header("authorization", format!("{scheme} {sub_tok}")),
        )
        .await;
        assert_eq!(sse.status, StatusCode::OK, "subscribe with {scheme}");
    }
    let basic = send(
        client()
            .post(hub.url())
            .header("authorization", format!("Basic {pub_tok}"))
            .form(&form()),
    )
    .await;
    assert_eq!(basic.status, StatusCode::UNAUTHORIZED, "another scheme");
}
