//! The Mercure delivery rules over real sockets: selectors (exact, `*`, URI
//! templates), alternates, deduplication, private updates against claims, the
//! frame format, generated ids and the response headers of a subscription.

use std::time::Duration;

use hubbub_testkit::{
    Config, Item, KEY, RawConn, RawHead, SseClient, StatusCode, TestHub, config, subscriber,
};

const BOOK: &str = "https://example.com/books/1";
const REVIEW: &str = "https://example.com/books/1/reviews/2";
const AUTHOR: &str = "https://example.com/authors/1";

#[tokio::test]
async fn selectors_exact_any_and_templates() {
    let hub = TestHub::start(config()).await;
    let mut exact = hub.subscribe(&[BOOK]).await;
    let mut any = hub.subscribe(&["*"]).await;
    let mut simple = hub.subscribe(&["https://example.com/books/{id}"]).await;
    let mut reserved = hub.subscribe(&["https://example.com/{+path}"]).await;
    let mut other = hub.subscribe(&[AUTHOR]).await;

    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("review", &[REVIEW], false).await;
    hub.publish_on("elsewhere", &["https://other.example/books/1"], false)
        .await;
    // Reaches every subscriber above, so each one's stream is complete up to it.
    hub.publish_on("end", &[BOOK, AUTHOR], false).await;

    assert_eq!(exact.ids_until("end").await, ["book"], "exact");
    assert_eq!(
        any.ids_until("end").await,
        ["book", "review", "elsewhere"],
        "*"
    );
    assert_eq!(
        simple.ids_until("end").await,
        ["book"],
        "{{id}} must not match a '/'"
    );
    assert_eq!(
        reserved.ids_until("end").await,
        ["book", "review"],
        "{{+path}} matches across '/'"
    );
    assert_eq!(other.ids_until("end").await, Vec::<String>::new(), "other");
}

/// Level-4 operators end to end (the matcher's own table lives in hubbub-proto):
/// each subscriber also listens on a marker topic that bounds its stream.
#[tokio::test]
async fn uri_template_operators_over_http() {
    const MARKER: &str = "urn:test:end";
    let cases: &[(&str, &[&str])] = &[
        (
            "https://example.com/books{/id}",
            &["https://example.com/books/1"],
        ),
        (
            "https://example.com/files{/path*}",
            &["https://example.com/files/a/b"],
        ),
        (
            "https://example.com/search{?q,lang}",
            &[
                "https://example.com/search?q=x&lang=fr",
                "https://example.com/search",
            ],
        ),
        (
            "https://example.com/doc{#section}",
            // An undefined variable expands to nothing.
            &["https://example.com/doc#intro", "https://example.com/doc"],
        ),
        (
            "https://example.com/users/{user}/books{?sort}",
            &["https://example.com/users/kevin/books?sort=asc"],
        ),
    ];
    let topics = [
        "https://example.com/books/1",
        "https://example.com/books/1/2",
        "https://example.com/files/a/b",
        "https://example.com/search?q=x&lang=fr",
        "https://example.com/search",
        "https://example.com/search?lang=fr&q=x",
        "https://example.com/doc#intro",
        "https://example.com/doc",
        "https://example.com/users/kevin/books?sort=asc",
        "https://example.com/users/a/b/books",
    ];
    let hub = TestHub::start(config()).await;
    let mut subs = Vec::new();
    for (selector, _) in cases {
        subs.push(hub.subscribe(&[selector, MARKER]).await);
    }
    for topic in topics {
        hub.publish_ok(&[("topic", topic), ("id", topic)]).await;
    }
    hub.publish_ok(&[("topic", MARKER), ("id", "end")]).await;
    for ((selector, want), sub) in cases.iter().zip(&mut subs) {
        assert_eq!(sub.ids_until("end").await, *want, "{selector}");
    }
}

#[tokio::test]
async fn a_template_selector_also_matches_its_literal_text() {
    let hub = TestHub::start(config()).await;
    let template = "https://example.com/books/{id}";
    let mut sub = hub.subscribe(&[template]).await;
    hub.publish_on("literal", &[template], false).await;
    assert_eq!(sub.expect_event().await.id.as_deref(), Some("literal"));
}

#[tokio::test]
async fn alternates_reach_their_subscribers_once() {
    let hub = TestHub::start(config()).await;
    let mut of_alternate = hub.subscribe(&[AUTHOR]).await;
    let mut of_both = hub.subscribe(&[BOOK, AUTHOR]).await;
    let mut of_everything = hub
        .subscribe(&[BOOK, AUTHOR, "*", "https://example.com/{+path}"])
        .await;

    hub.publish_on("both", &[BOOK, AUTHOR], false).await;
    hub.publish_on("book-only", &[BOOK], false).await;
    hub.publish_on("end", &[AUTHOR], false).await;

    assert_eq!(of_alternate.ids_until("end").await, ["both"]);
    assert_eq!(of_both.ids_until("end").await, ["both", "book-only"]);
    assert_eq!(
        of_everything.ids_until("end").await,
        ["both", "book-only"],
        "several matching selectors still mean one delivery"
    );
}

#[tokio::test]
async fn private_updates_need_a_matching_subscribe_claim() {
    let hub = TestHub::start(config()).await;
    let mut anonymous = hub.subscribe(&[BOOK]).await;
    let mut claimed = hub
        .subscribe_with(
            &[BOOK],
            &subscriber(KEY, &["https://example.com/books/{id}"]),
        )
        .await;
    let mut not_claimed = hub
        .subscribe_with(&[BOOK], &subscriber(KEY, &[AUTHOR]))
        .await;
    let mut no_claim = hub
        .subscribe_with(&[BOOK], &hubbub_testkit::token(KEY, serde_json::json!({})))
        .await;
    // The claim may cover an alternate rather than the topic subscribed to.
    let mut claimed_alternate = hub
        .subscribe_with(&[BOOK], &subscriber(KEY, &[AUTHOR]))
        .await;
    let mut claimed_everything = hub.subscribe_with(&["*"], &subscriber(KEY, &["*"])).await;

    hub.publish_on("private", &[BOOK], true).await;
    hub.publish_on("private-alt", &[BOOK, AUTHOR], true).await;
    // Presence alone makes an update private, whatever the value.
    hub.publish_ok(&[("topic", BOOK), ("id", "private-empty"), ("private", "")])
        .await;
    hub.publish_on("end", &[BOOK], false).await;

    assert_eq!(anonymous.ids_until("end").await, Vec::<String>::new());
    assert_eq!(
        claimed.ids_until("end").await,
        ["private", "private-alt", "private-empty"]
    );
    assert_eq!(not_claimed.ids_until("end").await, ["private-alt"]);
    assert_eq!(no_claim.ids_until("end").await, Vec::<String>::new());
    assert_eq!(claimed_alternate.ids_until("end").await, ["private-alt"]);
    assert_eq!(
        claimed_everything.ids_until("end").await,
        ["private", "private-alt", "private-empty"]
    );
}

#[tokio::test]
async fn private_updates_are_not_replayed_to_the_unauthorized() {
    let hub = TestHub::start(config()).await;
    hub.publish_on("secret", &[BOOK], true).await;
    hub.publish_on("public", &[BOOK], false).await;

    let url = hub.subscribe_url(&[BOOK]);
    let mut anonymous = SseClient::connect(
        hubbub_testkit::client()
            .get(&url)
            .header("last-event-id", "earliest"),
    )
    .await;
    assert_eq!(anonymous.ids(1).await, ["public"]);
    anonymous.expect_no_event(Duration::from_millis(300)).await;

    let mut claimed = SseClient::connect(
        hubbub_testkit::client()
            .get(&url)
            .header("last-event-id", "earliest")
            .bearer_auth(subscriber(KEY, &[BOOK])),
    )
    .await;
    assert_eq!(claimed.ids(2).await, ["secret", "public"]);
}

#[tokio::test]
async fn multi_line_data_arrives_intact() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe(&[BOOK]).await;
    let data = "first\n\n  indented\n\nlast line\n";
    hub.publish_ok(&[("topic", BOOK), ("id", "ml"), ("data", data)])
        .await;
    hub.publish_ok(&[("topic", BOOK), ("id", "crlf"), ("data", "a\r\nb\rc")])
        .await;
    hub.publish_ok(&[("topic", BOOK), ("id", "empty")]).await;

    let events = sub.events(3).await;
    assert_eq!(events[0].data, data);
    assert_eq!(events[1].data, "a\nb\nc", "CRLF and CR are line breaks too");
    assert_eq!(events[2].data, "", "no data is an empty data line");

    let raw = String::from_utf8_lossy(sub.raw()).into_owned();
    let want = "id: ml\ndata: first\ndata: \ndata:   indented\ndata: \ndata: last line\ndata: \n\n";
    assert!(raw.contains(want), "raw stream {raw:?} lacks {want:?}");
    assert!(
        raw.contains("id: crlf\ndata: a\ndata: b\ndata: c\n\n"),
        "{raw:?}"
    );
    assert!(raw.contains("id: empty\ndata: \n\n"), "{raw:?}");
}

#[tokio::test]
async fn type_and_retry_lines() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe(&[BOOK]).await;
    hub.publish_ok(&[
        ("topic", BOOK),
        ("id", "typed"),
        ("type", "book.updated"),
        ("retry", "1500"),
        ("data", "x"),
    ])
    .await;
    hub.publish_ok(&[("topic", BOOK), ("id", "zero"), ("retry", "0")])
        .await;

    let typed = sub.expect_event().await;
    assert_eq!(typed.event_type.as_deref(), Some("book.updated"));
    assert_eq!(typed.retry, Some(1500));
    let zero = sub.expect_event().await;
    assert_eq!(
        (zero.event_type, zero.retry),
        (None, None),
        "retry=0 is unset"
    );

    let raw = String::from_utf8_lossy(sub.raw()).into_owned();
    assert!(
        raw.contains("event: book.updated\nretry: 1500\nid: typed\ndata: x\n\n"),
        "{raw:?}"
    );
    assert!(raw.contains("\nid: zero\ndata: \n\n"), "{raw:?}");
    assert!(!raw.contains("retry: 0"), "{raw:?}");
}

#[tokio::test]
async fn ids_custom_generated_and_repeated() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe(&[BOOK]).await;

    let custom = "https://example.com/events/ü 1";
    let r = hub.publish(&[("topic", BOOK), ("id", custom)]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, custom, "the POST answers with the id as sent");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");

    let generated = hub.publish_ok(&[("topic", BOOK)]).await;
    let uuid = generated
        .strip_prefix("urn:uuid:")
        .unwrap_or_else(|| panic!("generated id {generated:?}"));
    assert_eq!(uuid.len(), 36, "{uuid:?}");
    assert_eq!(uuid.as_bytes()[14], b'7', "a version 7 UUID: {uuid:?}");
    let other = hub.publish_ok(&[("topic", BOOK)]).await;
    assert_ne!(generated, other, "generated ids are unique");

    assert_eq!(
        hub.publish_ok(&[("topic", BOOK), ("id", "dup")]).await,
        "dup"
    );
    assert_eq!(
        hub.publish_ok(&[("topic", BOOK), ("id", "dup")]).await,
        "dup"
    );

    assert_eq!(
        sub.ids(5).await,
        [custom, &generated, &other, "dup", "dup"],
        "every update arrives under its id"
    );
}

#[tokio::test]
async fn subscription_response_headers_and_open_comment() {
    let hub = TestHub::start(config()).await;
    let mut sub = hub.subscribe(&[BOOK]).await;
    assert_eq!(sub.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        sub.header("cache-control"),
        Some("private, no-cache, no-store, must-revalidate, max-age=0")
    );
    assert_eq!(sub.header("x-accel-buffering"), Some("no"));
    assert_eq!(
        sub.header("last-event-id"),
        None,
        "only resumed streams carry Last-Event-ID"
    );

    let first = sub.next_item(hubbub_testkit::WAIT).await;
    assert_eq!(first, Some(Item::Comment(String::new())));
    assert_eq!(sub.raw(), b":\n", "the stream opens with exactly \":\\n\"");
}

#[tokio::test]
async fn subscribe_needs_a_valid_topic() {
    let hub = TestHub::start(config()).await;
    let none = SseClient::get(&hub.url()).await;
    assert_eq!(none.status, StatusCode::BAD_REQUEST, "no topic");
    let bad = SseClient::get(&hub.subscribe_url(&["https://example.com/{id"])).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "broken URI template");
}

#[tokio::test]
async fn query_plus_is_a_space_in_selectors() {
    let hub = TestHub::start(config()).await;
    let url = format!("{}?topic=a+b", hub.url());
    let mut sub = SseClient::get(&url).await;
    assert_eq!(sub.status, StatusCode::OK);
    hub.publish_ok(&[("topic", "a b"), ("id", "spaced")]).await;
    assert_eq!(sub.expect_event().await.id.as_deref(), Some("spaced"));
}

/// Sends `request` on a fresh connection; returns the response head and, for
/// a plain response, its body (read to the close the request asked for).
async fn exchange(hub: &TestHub, request: &str, streaming: bool) -> (RawHead, Vec<u8>) {
    let mut conn = RawConn::connect(hub.addr).await;
    conn.write(request.as_bytes()).await;
    let head = conn.read_head().await;
    let body = if streaming {
        Vec::new()
    } else {
        conn.read_to_close().await
    };
    (head, body)
}

/// Checks the framing headers of one response: exactly one `Date`; exactly
/// one `Content-Length`, matching the body, unless it is an event stream.
fn assert_framing(what: &str, head: &RawHead, body: &[u8], streaming: bool) {
    assert_eq!(head.all("date").len(), 1, "{what}: one Date: {head:?}");
    let lengths = head.all("content-length");
    if streaming {
        assert!(lengths.is_empty(), "{what}: {head:?}");
        return;
    }
    assert_eq!(lengths.len(), 1, "{what}: one Content-Length: {head:?}");
    assert_eq!(lengths[0], body.len().to_string(), "{what}: {head:?}");
}

/// Every response, whichever code path writes it (our own writer for
/// subscriptions, hyper for the rest, the refusal over the connection cap),
/// carries one `Date` and, unless streamed, one `Content-Length`.
#[tokio::test]
async fn every_response_head_has_one_content_length_and_a_date() {
    let hub = TestHub::start(Config {
        anonymous: false,
        ..config()
    })
    .await;
    let token = subscriber(KEY, &["*"]);
    let get = |target: &str, extra: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: hubbub.test\r\n{extra}Connection: close\r\n\r\n")
    };
    let auth = format!("Authorization: Bearer {token}\r\n");
    let cases = [
        ("subscribe, no topic", get("/.well-known/mercure", ""), 400, false),
        ("subscribe, no token", get("/.well-known/mercure?topic=a", ""), 401, false),
        ("subscribe, HTTP/1.0", get("/.well-known/mercure?topic=a", "").replace("1.1", "1.0"), 401, false),
        ("subscribe", get("/.well-known/mercure?topic=a", &auth), 200, true),
        ("health", get("/healthz", ""), 200, false),
        ("publish, no token", "POST /.well-known/mercure HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(), 401, false),
    ];
    for (what, request, status, streaming) in cases {
        let (head, body) = exchange(&hub, &request, streaming).await;
        assert_eq!(head.status, status, "{what}");
        assert_framing(what, &head, &body, streaming);
    }

    let capped = TestHub::start(Config {
        max_connections: 1,
        ..config()
    })
    .await;
    let _held = capped.subscribe(&["a"]).await;
    let (head, body) = exchange(&capped, &get("/healthz", ""), false).await;
    assert_eq!(head.status, 503);
    assert_framing("over the connection cap", &head, &body, false);
}

/// Bare-LF line ends (tolerated by HTTP/1.1 parsers, RFC 9112 2.2) get an
/// answer at once, on both the subscription path and hyper's, instead of
/// waiting silently for a CRLF CRLF that never comes.
#[tokio::test]
async fn a_request_with_bare_lf_line_ends_is_answered() {
    let hub = TestHub::start(config()).await;
    for (request, streaming) in [
        ("GET /healthz HTTP/1.1\nHost: x\n\n", false),
        (
            "GET /.well-known/mercure?topic=a HTTP/1.1\nHost: x\n\n",
            true,
        ),
        ("GET /.well-known/mercure HTTP/1.1\nHost: x\n\n", false),
    ] {
        let mut conn = RawConn::connect(hub.addr).await;
        conn.write(request.as_bytes()).await;
        let head = tokio::time::timeout(Duration::from_secs(2), conn.read_head())
            .await
            .unwrap_or_else(|_| panic!("no answer within 2 s to {request:?}"));
        let want = if request.contains("mercure HTTP") {
            400
        } else {
            200
        };
        assert_eq!(head.status, want, "{request:?}");
        if streaming {
            conn.read_until(b":\n").await;
        }
    }
}
