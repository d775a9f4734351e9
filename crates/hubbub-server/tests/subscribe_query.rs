//! Subscribing with `QUERY` (RFC 10008) and a form body, per
//! draft-dunglas-mercure-08: body-only matchers, the union with the query,
//! `last_event_id` precedence, the body's limits and media type, the same
//! name and value rules as the query, private updates and `max_topics` over
//! the union. Over real sockets: reqwest for the common case, raw bytes for
//! `Expect: 100-continue`, chunked bodies and a body that never completes.

use std::time::Duration;

use hubbub_testkit::reqwest::{Method, RequestBuilder};
use hubbub_testkit::{
    Config, HttpResponse, KEY, RawConn, SseClient, StatusCode, TestHub, client, config,
    encode_form, send, subscriber,
};

const BOOK: &str = "https://example.com/books/1";
const AUTHOR: &str = "https://example.com/authors/1";
const END: &str = "urn:test:end";
const FORM: &str = "application/x-www-form-urlencoded";

fn query_method() -> Method {
    Method::from_bytes(b"QUERY").unwrap()
}

/// `QUERY url` with a form body.
fn query(url: &str, body: impl Into<Vec<u8>>) -> RequestBuilder {
    client()
        .request(query_method(), url)
        .header("content-type", FORM)
        .body(body.into())
}

fn url_with(hub: &TestHub, params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        hub.url()
    } else {
        format!("{}?{}", hub.url(), encode_form(params))
    }
}

async fn subscribe(hub: &TestHub, params: &[(&str, &str)], body: &[(&str, &str)]) -> SseClient {
    let sse = SseClient::connect(query(&url_with(hub, params), encode_form(body))).await;
    assert_eq!(sse.status, StatusCode::OK, "QUERY {params:?} {body:?}");
    sse
}

async fn refused(request: RequestBuilder) -> HttpResponse {
    send(request).await
}

#[tokio::test]
async fn body_only_matchers_receive_updates() {
    let hub = TestHub::start(config()).await;
    let mut exact = subscribe(&hub, &[], &[("match", BOOK), ("match", END)]).await;
    let mut pattern = subscribe(
        &hub,
        &[],
        &[
            ("match_urlpattern", "https://example.com/authors/:id"),
            ("match_exact", END),
        ],
    )
    .await;
    let mut legacy = subscribe(
        &hub,
        &[],
        &[("topic", "https://example.com/books/{id}"), ("topic", END)],
    )
    .await;

    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("author", &[AUTHOR], false).await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(exact.ids_until("end").await, ["book"]);
    assert_eq!(pattern.ids_until("end").await, ["author"]);
    assert_eq!(legacy.ids_until("end").await, ["book"]);
}

/// What curl sends for a body over 1 KiB: `Expect: 100-continue`, the body
/// only after `100 Continue`. And a chunked body, which hyper reads.
#[tokio::test]
async fn expect_continue_and_chunked_bodies() {
    let hub = TestHub::start(config()).await;
    let body = encode_form(&[("match", BOOK), ("match", END)]);
    let mut expecting = RawConn::connect(hub.addr).await;
    expecting
        .write(
            format!(
                "QUERY /.well-known/mercure HTTP/1.1\r\nHost: hubbub.test\r\n\
                 Content-Type: {FORM}\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(expecting.read_head().await.status, 100);
    expecting.write(body.as_bytes()).await;
    let head = expecting.read_head().await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("text/event-stream"));

    let mut chunked = RawConn::connect(hub.addr).await;
    let (first, rest) = body.split_at(10);
    chunked
        .write(
            format!(
                "QUERY /.well-known/mercure HTTP/1.1\r\nHost: hubbub.test\r\n\
                 Content-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {:x}\r\n{first}\r\n{:x}\r\n{rest}\r\n0\r\n\r\n",
                first.len(),
                rest.len()
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(chunked.read_head().await.status, 200);

    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("end", &[END], false).await;
    for conn in [&mut expecting, &mut chunked] {
        let got = String::from_utf8_lossy(conn.read_until(b"id: end").await).into_owned();
        assert!(got.contains("id: book"), "{got}");
    }
}

#[tokio::test]
async fn query_and_body_parameters_are_united() {
    let hub = TestHub::start(config()).await;
    let mut both = subscribe(
        &hub,
        &[("match", BOOK)],
        &[("match", AUTHOR), ("match", END)],
    )
    .await;
    let mut legacy_and_new = subscribe(&hub, &[("topic", AUTHOR)], &[("match", END)]).await;

    hub.publish_on("book", &[BOOK], false).await;
    hub.publish_on("author", &[AUTHOR], false).await;
    hub.publish_on("other", &["https://example.com/other"], false)
        .await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(both.ids_until("end").await, ["book", "author"]);
    assert_eq!(legacy_and_new.ids_until("end").await, ["author"]);
}

/// The `Last-Event-ID` header beats the query, which beats the body; a body
/// alone is enough to resume.
#[tokio::test]
async fn last_event_id_precedence_header_query_body() {
    let hub = TestHub::start(config()).await;
    for id in ["a", "b", "c", "d"] {
        hub.publish_on(id, &[BOOK], false).await;
    }
    hub.publish_on("end", &[END], false).await;
    let matchers = [("match", BOOK), ("match", END)];
    let with = |extra: (&'static str, &'static str)| {
        let mut v = matchers.to_vec();
        v.push(extra);
        v
    };

    let mut body_only = subscribe(&hub, &[], &with(("last_event_id", "a"))).await;
    assert_eq!(body_only.header("mercure-last-event-id"), Some("a"));
    assert_eq!(body_only.ids_until("end").await, ["b", "c", "d"]);

    let mut query_wins = subscribe(
        &hub,
        &[("last_event_id", "b")],
        &with(("last_event_id", "a")),
    )
    .await;
    assert_eq!(query_wins.ids_until("end").await, ["c", "d"]);

    // The query's legacy name still beats the body: precedence is per component.
    let mut legacy_query =
        subscribe(&hub, &[("lastEventID", "b")], &with(("last_event_id", "a"))).await;
    assert_eq!(legacy_query.ids_until("end").await, ["c", "d"]);

    let request = query(
        &url_with(&hub, &[("last_event_id", "b")]),
        encode_form(&with(("last_event_id", "a"))),
    )
    .header("last-event-id", "c");
    let mut header_wins = SseClient::connect(request).await;
    assert_eq!(header_wins.status, StatusCode::OK);
    assert_eq!(header_wins.ids_until("end").await, ["d"]);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let hub = TestHub::start(Config {
        max_subscribe_body_bytes: 80,
        ..config()
    })
    .await;
    let fits = encode_form(&[("match", BOOK), ("match", END)]);
    assert!(fits.len() <= 80, "{}", fits.len());
    let ok = SseClient::connect(query(&hub.url(), fits)).await;
    assert_eq!(ok.status, StatusCode::OK, "a body within the limit");

    let big = encode_form(&[("match", BOOK), ("match", AUTHOR), ("match", END)]);
    assert!(big.len() > 80);
    let r = refused(query(&hub.url(), big.clone())).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.body);
    assert!(r.body.contains("max_subscribe_body_bytes"), "{}", r.body);

    // Without a Content-Length to refuse early: counted while reading.
    let mut chunked = RawConn::connect(hub.addr).await;
    chunked
        .write(
            format!(
                "QUERY /.well-known/mercure HTTP/1.1\r\nHost: hubbub.test\r\n\
                 Content-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
                big.len()
            )
            .as_bytes(),
        )
        .await;
    assert_eq!(chunked.read_head().await.status, 413);
}

#[tokio::test]
async fn a_body_that_is_not_a_form_is_415() {
    let hub = TestHub::start(config()).await;
    let form = encode_form(&[("match", BOOK)]);
    for content_type in ["text/plain", "application/json", "multipart/form-data"] {
        let request = client()
            .request(query_method(), hub.url())
            .header("content-type", content_type)
            .body(form.clone());
        let r = refused(request).await;
        assert_eq!(
            r.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}"
        );
        assert_eq!(r.header("accept-query"), Some(FORM), "{content_type}");
    }
    let untyped = client().request(query_method(), hub.url()).body(form);
    assert_eq!(
        refused(untyped).await.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "a body without a media type"
    );
    // Parameters on the media type are fine, and no body needs no type.
    let charset = client()
        .request(query_method(), hub.url())
        .header(
            "content-type",
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8",
        )
        .body(encode_form(&[("match", BOOK)]));
    assert_eq!(SseClient::connect(charset).await.status, StatusCode::OK);
    let bodiless = client().request(query_method(), url_with(&hub, &[("match", BOOK)]));
    assert_eq!(SseClient::connect(bodiless).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_match_namespace_is_reserved_in_the_body() {
    let hub = TestHub::start(config()).await;
    for name in ["Match", "MATCH_EXACT", "match_regex", "matches", "match_"] {
        let r = refused(query(
            &hub.url(),
            encode_form(&[("match", BOOK), (name, BOOK)]),
        ))
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}");
        assert!(r.body.contains("reserved"), "{name}: {}", r.body);
    }
    let fine = SseClient::connect(query(
        &hub.url(),
        encode_form(&[("match", BOOK), ("xmatch", "1")]),
    ))
    .await;
    assert_eq!(fine.status, StatusCode::OK, "only the prefix is reserved");
}

#[tokio::test]
async fn bad_bytes_in_body_values_are_400() {
    let hub = TestHub::start(config()).await;
    let bad: [&[u8]; 9] = [
        b"match=%FF",
        b"match=\xFF",
        b"match=a\xC3",
        b"match=a%0Ab",
        b"match=a\nb",
        b"match_exact=%00",
        b"match=%7F",
        b"match=%C2%85",
        b"match=%E2%80%AE",
    ];
    for body in bad {
        let r = refused(query(&hub.url(), body.to_vec())).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(r.body.contains("in the body"), "{}", r.body);
    }
    let ok = SseClient::connect(query(&hub.url(), &b"match=%C3%A9&match=e+f"[..])).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn private_updates_follow_the_token() {
    let hub = TestHub::start(config()).await;
    let body = encode_form(&[("match", BOOK), ("match", END)]);
    let mut granted =
        SseClient::connect(query(&hub.url(), body.clone()).bearer_auth(subscriber(KEY, &[BOOK])))
            .await;
    assert_eq!(granted.status, StatusCode::OK);
    let mut anonymous = subscribe(&hub, &[], &[("match", BOOK), ("match", END)]).await;
    let bad_token = refused(query(&hub.url(), body).bearer_auth("not-a-jwt")).await;
    assert_eq!(bad_token.status, StatusCode::UNAUTHORIZED);

    hub.publish_on("secret", &[BOOK], true).await;
    hub.publish_on("public", &[BOOK], false).await;
    hub.publish_on("end", &[END], false).await;

    assert_eq!(granted.ids_until("end").await, ["secret", "public"]);
    assert_eq!(anonymous.ids_until("end").await, ["public"]);
}

#[tokio::test]
async fn max_topics_counts_the_union() {
    let hub = TestHub::start(Config {
        max_topics: 2,
        ..config()
    })
    .await;
    let two = SseClient::connect(query(
        &url_with(&hub, &[("match", BOOK)]),
        encode_form(&[("match", AUTHOR)]),
    ))
    .await;
    assert_eq!(two.status, StatusCode::OK);
    let three = refused(query(
        &url_with(&hub, &[("match", BOOK)]),
        encode_form(&[("match", AUTHOR), ("topic", END)]),
    ))
    .await;
    assert_eq!(three.status, StatusCode::BAD_REQUEST, "{}", three.body);
}

/// The lean path reads the body itself: one that stops short gets 408 once
/// `request_timeout` passed, instead of holding the connection.
#[tokio::test]
async fn a_body_that_stops_short_times_out() {
    let hub = TestHub::start(Config {
        request_timeout: Duration::from_millis(300),
        ..config()
    })
    .await;
    let mut conn = RawConn::connect(hub.addr).await;
    conn.write(
        format!(
            "QUERY /.well-known/mercure HTTP/1.1\r\nHost: hubbub.test\r\n\
             Content-Type: {FORM}\r\nContent-Length: 40\r\n\r\nmatch=ab"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(conn.read_head().await.status, 408);
}

#[tokio::test]
async fn methods_post_publishes_and_others_are_405() {
    let hub = TestHub::start(Config {
        cors_origins: vec!["https://app.example".into()],
        ..config()
    })
    .await;
    // POST with subscribe parameters is a publish (no token: 401), never a subscription.
    let post = refused(
        client()
            .post(hub.url())
            .header("content-type", FORM)
            .body(encode_form(&[("match", BOOK)])),
    )
    .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);
    let put = refused(client().put(hub.url())).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);
    let allow = put.header("allow").unwrap_or_default();
    assert!(allow.contains("QUERY") && allow.contains("GET"), "{allow}");

    let preflight = refused(
        client()
            .request(Method::OPTIONS, hub.url())
            .header("origin", "https://app.example")
            .header("access-control-request-method", "QUERY")
            .header("access-control-request-headers", "content-type"),
    )
    .await;
    assert!(preflight.status.is_success(), "{}", preflight.status);
    let methods = preflight
        .header("access-control-allow-methods")
        .unwrap_or_default();
    assert!(methods.split(", ").any(|m| m == "QUERY"), "{methods}");
}
