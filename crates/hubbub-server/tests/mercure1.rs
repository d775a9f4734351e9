//! The subscribing side of Mercure 1.0 (draft-dunglas-mercure-08) over real
//! sockets: `match` / `match_exact` selectors next to 0.x `topic=`, the
//! reserved `match` namespace, matcher value rules, `last_event_id` and the
//! `Mercure-Last-Event-ID` response field.

use hubbub_testkit::{KEY, SseClient, StatusCode, TestHub, config, encode_form, get, subscriber};

const BOOK: &str = "https://example.com/books/1";
const AUTHOR: &str = "https://example.com/authors/1";
const END: &str = "urn:test:end";

fn url(hub: &TestHub, params: &[(&str, &str)]) -> String {
    format!("{}?{}", hub.url(), encode_form(params))
}

async fn subscribe(hub: &TestHub, params: &[(&str, &str)]) -> SseClient {
    let sse = SseClient::get(&url(hub, params)).await;
    assert_eq!(sse.status, StatusCode::OK, "subscribe {params:?}");
    sse
}

#[tokio::test]
async fn match_and_match_exact_select_exact_topics() {
    let hub = TestHub::start(config()).await;
    let mut bare = subscribe(&hub, &[("match", BOOK), ("match", END)]).await;
    let mut explicit = subscribe(&hub, &[("match_exact", BOOK), ("match_exact", END)]).await;
    let mut several = subscribe(
        &hub,
        &[("match", BOOK), ("match_exact", AUTHOR), ("match", END)],
    )
    .await;
    let mut mixed = subscribe(&hub, &[("topic", AUTHOR), ("match", END)]).await;
    let mut other = subscribe(
        &hub,
        &[("match", "https://example.com/books/2"), ("match", END)],
    )
    .await;
    let mut wildcard = subscribe(&hub, &[("match", "*")]).await;

    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("author", &[AUTHOR], false).await;
    hub.publish_on("prefix", &["https://example.com/books/10"], false)
        .await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(bare.ids_until("end").await, ["book"], "match");
    assert_eq!(explicit.ids_until("end").await, ["book"], "match_exact");
    assert_eq!(several.ids_until("end").await, ["book", "author"], "union");
    assert_eq!(mixed.ids_until("end").await, ["author"], "topic= + match=");
    assert_eq!(
        other.ids_until("end").await,
        Vec::<String>::new(),
        "no match"
    );
    assert_eq!(
        wildcard.ids_until("end").await,
        ["book", "author", "prefix"],
        "`*` is the wildcard whatever the matcher type"
    );
}

#[tokio::test]
async fn a_match_value_is_never_a_uri_template() {
    let hub = TestHub::start(config()).await;
    let template = "https://example.com/books/{id}";
    let mut exact = subscribe(&hub, &[("match", template), ("match", END)]).await;
    let mut legacy = subscribe(&hub, &[("topic", template), ("match", END)]).await;
    // Not a valid template, but a fine exact matcher.
    let broken = SseClient::get(&url(&hub, &[("match", "https://example.com/{id")])).await;
    assert_eq!(broken.status, StatusCode::OK);

    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("literal", &[template], false).await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(exact.ids_until("end").await, ["literal"]);
    assert_eq!(legacy.ids_until("end").await, ["book", "literal"]);
}

#[tokio::test]
async fn the_match_namespace_is_reserved() {
    let hub = TestHub::start(config()).await;
    for name in [
        "Match",
        "MATCH",
        "match_regex",
        "Match_exact",
        "matches",
        "match_",
    ] {
        let r = get(&url(&hub, &[("topic", BOOK), (name, BOOK)])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}");
        assert!(r.body.contains("reserved"), "{name}: {}", r.body);
    }
    // Only the prefix is reserved.
    let fine = SseClient::get(&url(&hub, &[("topic", BOOK), ("xmatch", "1")])).await;
    assert_eq!(fine.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_matcher_values_are_refused() {
    let hub = TestHub::start(config()).await;
    for value in [
        "%FF",
        "a%0Ab",
        "%7F",
        "%C2%85",
        "%E2%80%AE",
        "%E2%80%8B",
        "%EF%BB%BF",
    ] {
        let r = get(&format!("{}?match={value}", hub.url())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "match={value}");
        let r = get(&format!("{}?match_exact=x&match_exact={value}", hub.url())).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "match_exact={value}");
    }
    let empty = get(&format!("{}?match=", hub.url())).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST, "empty value");
    // 0.x topic= acceptance is unchanged: a zero-width space is still allowed.
    let legacy = SseClient::get(&format!("{}?topic=a%E2%80%8Bb", hub.url())).await;
    assert_eq!(legacy.status, StatusCode::OK);
}

#[tokio::test]
async fn limits_count_every_kind_of_selector() {
    let mut cfg = config();
    cfg.max_topics = 2;
    cfg.max_topic_bytes = 32;
    let hub = TestHub::start(cfg).await;
    let ok = SseClient::get(&url(&hub, &[("topic", "a"), ("match", "b")])).await;
    assert_eq!(ok.status, StatusCode::OK);
    let three = get(&url(
        &hub,
        &[("topic", "a"), ("match", "b"), ("match_exact", "c")],
    ))
    .await;
    assert_eq!(three.status, StatusCode::BAD_REQUEST, "max_topics");
    let long = "x".repeat(33);
    let long = get(&url(&hub, &[("match", &long)])).await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST, "max_topic_bytes");
}

#[tokio::test]
async fn last_event_id_resumes_and_the_response_says_where() {
    let hub = TestHub::start(config()).await;
    for id in ["u1", "u2", "u3"] {
        hub.publish_on(id, &[BOOK], false).await;
    }
    let mut resumed = subscribe(&hub, &[("match", BOOK), ("last_event_id", "u1")]).await;
    assert_eq!(resumed.header("mercure-last-event-id"), Some("u1"));
    assert_eq!(
        resumed.header("last-event-id"),
        Some("u1"),
        "0.x header kept"
    );
    assert_eq!(resumed.ids(2).await, ["u2", "u3"]);

    // The header beats both query names; the 1.0 name beats the 0.x one.
    let mut header = SseClient::connect(
        hubbub_testkit::client()
            .get(url(
                &hub,
                &[
                    ("match", BOOK),
                    ("last_event_id", "u1"),
                    ("lastEventID", "u1"),
                ],
            ))
            .header("last-event-id", "u2"),
    )
    .await;
    assert_eq!(header.header("mercure-last-event-id"), Some("u2"));
    assert_eq!(header.ids(1).await, ["u3"]);
    let mut named = subscribe(
        &hub,
        &[
            ("match", BOOK),
            ("lastEventID", "u1"),
            ("last_event_id", "u2"),
        ],
    )
    .await;
    assert_eq!(named.ids(1).await, ["u3"]);

    let unknown = subscribe(&hub, &[("match", BOOK), ("last_event_id", "gone")]).await;
    assert_eq!(unknown.header("mercure-last-event-id"), Some("earliest"));
    let earliest = subscribe(&hub, &[("match", BOOK), ("last_event_id", "earliest")]).await;
    assert_eq!(earliest.header("mercure-last-event-id"), Some("earliest"));
    let live = subscribe(&hub, &[("match", BOOK)]).await;
    assert_eq!(
        live.header("mercure-last-event-id"),
        None,
        "only when resuming"
    );
}

#[tokio::test]
async fn private_updates_with_1_0_selectors_follow_the_claim() {
    let hub = TestHub::start(config()).await;
    let params = [("match", BOOK), ("match", END)];
    let mut anonymous = subscribe(&hub, &params).await;
    let mut claimed = SseClient::connect(
        hubbub_testkit::client()
            .get(url(&hub, &params))
            .bearer_auth(subscriber(KEY, &["https://example.com/books/{id}"])),
    )
    .await;
    let mut other_claim = SseClient::connect(
        hubbub_testkit::client()
            .get(url(&hub, &params))
            .bearer_auth(subscriber(KEY, &[AUTHOR])),
    )
    .await;

    hub.publish_on("secret", &[BOOK], true).await;
    hub.publish_on("public", &[BOOK], false).await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(anonymous.ids_until("end").await, ["public"]);
    assert_eq!(claimed.ids_until("end").await, ["secret", "public"]);
    assert_eq!(other_claim.ids_until("end").await, ["public"]);
}

#[tokio::test]
async fn match_urlpattern_selects_by_url_pattern() {
    let hub = TestHub::start(config()).await;
    let books = "https://example.com/books/:id";
    let mut pattern = subscribe(&hub, &[("match_urlpattern", books), ("match", END)]).await;
    let mut digits = subscribe(
        &hub,
        &[
            ("match_urlpattern", "https://example.com/books/:id(\\d+)"),
            ("match", END),
        ],
    )
    .await;
    // Relative patterns and topics are resolved against the hub's URL: here
    // http://127.0.0.1:PORT/.well-known/mercure, from the request's Host.
    let mut relative = subscribe(&hub, &[("match_urlpattern", "/local/:id"), ("match", END)]).await;
    let mut literal = subscribe(&hub, &[("match", books), ("match", END)]).await;
    // The same relative pattern under another hub URL (compiled apart).
    let mut proxied = SseClient::connect(
        hubbub_testkit::client()
            .get(url(
                &hub,
                &[("match_urlpattern", "/local/:id"), ("match", END)],
            ))
            .header("host", "other.example")
            .header("x-forwarded-proto", "https"),
    )
    .await;
    assert_eq!(proxied.status, StatusCode::OK);

    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("named", &["https://example.com/books/abc"], false)
        .await;
    hub.publish_on("deeper", &["https://example.com/books/1/reviews/2"], false)
        .await;
    hub.publish_on("author", &[AUTHOR], false).await;
    hub.publish_on("urn", &["urn:isbn:1"], false).await;
    hub.publish_on("local", &["/local/1"], false).await;
    let here = format!("{}/local/2", hub.base_url());
    hub.publish_on("local-absolute", &[&here], false).await;
    hub.publish_on("elsewhere", &["https://other.example/local/3"], false)
        .await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(pattern.ids_until("end").await, ["book", "named"]);
    assert_eq!(digits.ids_until("end").await, ["book"]);
    assert_eq!(relative.ids_until("end").await, ["local", "local-absolute"]);
    assert_eq!(
        literal.ids_until("end").await,
        Vec::<String>::new(),
        "match= is exact"
    );
    assert_eq!(proxied.ids_until("end").await, ["local", "elsewhere"]);
}

/// With `oauth_resource` configured, relative patterns resolve against it,
/// as `urlpattern` grants do, not against the request's Host.
#[tokio::test]
async fn relative_patterns_resolve_against_the_configured_resource() {
    let mut cfg = config();
    cfg.oauth_resource = Some("https://hub.example.com/.well-known/mercure".into());
    let hub = TestHub::start(cfg).await;
    let mut relative = subscribe(&hub, &[("match_urlpattern", "/local/:id"), ("match", END)]).await;
    hub.publish_on("resource", &["https://hub.example.com/local/1"], false)
        .await;
    let here = format!("{}/local/2", hub.base_url());
    hub.publish_on("host", &[&here], false).await;
    hub.publish_on("end", &[END], false).await;
    assert_eq!(relative.ids_until("end").await, ["resource"]);
}

#[tokio::test]
async fn url_patterns_select_the_replay_too() {
    let hub = TestHub::start(config()).await;
    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("author", &[AUTHOR], false).await;
    hub.publish_on("book2", &["https://example.com/books/2"], false)
        .await;
    let mut sub = subscribe(
        &hub,
        &[
            ("match_urlpattern", "https://example.com/books/:id"),
            ("last_event_id", "earliest"),
        ],
    )
    .await;
    assert_eq!(sub.header("mercure-last-event-id"), Some("earliest"));
    assert_eq!(sub.ids(2).await, ["book", "book2"]);
    sub.expect_no_event(std::time::Duration::from_millis(200))
        .await;
}

#[tokio::test]
async fn bad_url_patterns_are_refused() {
    let hub = TestHub::start(config()).await;
    for pattern in [
        "https://example.com/books/:id(",
        "https://example.com/:id((?=x))",
        "https://example.com/:id(\\w{200})",
        "https://example.com/books/\u{200B}:id",
    ] {
        let r = get(&url(&hub, &[("match_urlpattern", pattern)])).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{pattern}: {}", r.body);
    }
    let mut cfg = config();
    cfg.max_topic_bytes = 24;
    let small = TestHub::start(cfg).await;
    let long = get(&url(
        &small,
        &[("match_urlpattern", "https://example.com/books/:id")],
    ))
    .await;
    assert_eq!(long.status, StatusCode::BAD_REQUEST, "max_topic_bytes");
}

#[tokio::test]
async fn private_updates_with_url_patterns_follow_the_claim() {
    let hub = TestHub::start(config()).await;
    let params = [
        ("match_urlpattern", "https://example.com/books/:id"),
        ("match", END),
    ];
    let mut anonymous = subscribe(&hub, &params).await;
    let mut claimed = SseClient::connect(
        hubbub_testkit::client()
            .get(url(&hub, &params))
            .bearer_auth(subscriber(KEY, &[BOOK])),
    )
    .await;

    hub.publish_on("secret", &[BOOK], true).await;
    hub.publish_on("other-secret", &["https://example.com/books/2"], true)
        .await;
    hub.publish_on("public", &[BOOK], false).await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(anonymous.ids_until("end").await, ["public"]);
    assert_eq!(claimed.ids_until("end").await, ["secret", "public"]);
}
