//! Every limit and malformed request, and the status each one answers with:
//! 400s, the reserved topic, body size, topic counts, subscribers, publish rates
//! and open connections.

use std::time::Duration;

use hubbub_testkit::{
    Config, RawConn, SseClient, StatusCode, TestHub, client, config, eventually, send,
};

const TOPIC: &str = "https://example.com/books/1";

async fn post_raw(hub: &TestHub, content_type: Option<&str>, body: &str) -> StatusCode {
    let mut request = client()
        .post(hub.url())
        .bearer_auth(hub.publisher_token())
        .body(body.to_owned());
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    send(request).await.status
}

#[tokio::test]
async fn malformed_publishes_and_reserved_topics_are_400() {
    let hub = TestHub::start(config()).await;
    let form = "application/x-www-form-urlencoded";
    let cases: &[(&str, Option<&str>, &str, StatusCode)] = &[
        ("no topic", Some(form), "data=x", StatusCode::BAD_REQUEST),
        ("empty body", Some(form), "", StatusCode::BAD_REQUEST),
        (
            "retry not a number",
            Some(form),
            "topic=t&retry=soon",
            StatusCode::BAD_REQUEST,
        ),
        (
            "negative retry",
            Some(form),
            "topic=t&retry=-1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "id starting with #",
            Some(form),
            "topic=t&id=%23x",
            StatusCode::BAD_REQUEST,
        ),
        (
            "LF in id",
            Some(form),
            "topic=t&id=a%0Ab",
            StatusCode::BAD_REQUEST,
        ),
        (
            "CR in id",
            Some(form),
            "topic=t&id=a%0Db",
            StatusCode::BAD_REQUEST,
        ),
        (
            "NUL in id",
            Some(form),
            "topic=t&id=a%00b",
            StatusCode::BAD_REQUEST,
        ),
        (
            "LF in type",
            Some(form),
            "topic=t&type=a%0Ab",
            StatusCode::BAD_REQUEST,
        ),
        (
            "CR in type",
            Some(form),
            "topic=t&type=a%0Db",
            StatusCode::BAD_REQUEST,
        ),
        (
            "JSON body",
            Some("application/json"),
            "{\"topic\":\"t\"}",
            StatusCode::BAD_REQUEST,
        ),
        (
            "form body labelled text/plain",
            Some("text/plain"),
            "topic=t",
            StatusCode::BAD_REQUEST,
        ),
        ("no content type", None, "topic=t", StatusCode::BAD_REQUEST),
        (
            "reserved topic",
            Some(form),
            "topic=%2F.well-known%2Fmercure%2Fsubscriptions%2Fx",
            StatusCode::BAD_REQUEST,
        ),
        (
            "reserved absolute topic",
            Some(form),
            "topic=https%3A%2F%2Fh.example%2F.well-known%2Fmercure%2Fsubscriptions",
            StatusCode::BAD_REQUEST,
        ),
        (
            "reserved alternate",
            Some(form),
            "topic=t&topic=%2F.well-known%2Fmercure",
            StatusCode::BAD_REQUEST,
        ),
        (
            "reserved topic, percent-encoded",
            Some(form),
            "topic=%2F.well-known%2F%256Dercure%2Fsubscriptions",
            StatusCode::BAD_REQUEST,
        ),
        (
            "reserved topic, dot segments",
            Some(form),
            "topic=https%3A%2F%2Fh.example%2Fa%2F..%2F.well-known%2Fmercure%2Fx",
            StatusCode::BAD_REQUEST,
        ),
        (
            "reserved topic, relative to the hub URL",
            Some(form),
            "topic=mercure%2Fsubscriptions%2Fx",
            StatusCode::BAD_REQUEST,
        ),
        (
            "the wildcard topic",
            Some(form),
            "topic=*",
            StatusCode::BAD_REQUEST,
        ),
        // Positive controls.
        (
            "charset suffix",
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            "topic=t",
            StatusCode::OK,
        ),
        (
            "a # inside an id",
            Some(form),
            "topic=t&id=a%23b",
            StatusCode::OK,
        ),
        (
            "near-reserved topic",
            Some(form),
            "topic=%2F.well-known%2Fmercurex",
            StatusCode::OK,
        ),
        (
            "unknown fields are ignored",
            Some(form),
            "topic=t&color=blue",
            StatusCode::OK,
        ),
    ];
    for (what, ct, body, want) in cases {
        assert_eq!(post_raw(&hub, *ct, body).await, *want, "{what}");
    }
    assert_eq!(
        hub.metric("hubbub_updates_published_total").await,
        Some(4.0),
        "only the positive controls were accepted"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let hub = TestHub::start(Config {
        max_body_bytes: 1024,
        ..config()
    })
    .await;
    let small = "x".repeat(900);
    let big = "x".repeat(2000);
    let ok = hub.publish(&[("topic", TOPIC), ("data", &small)]).await;
    assert_eq!(ok.status, StatusCode::OK);
    let r = hub.publish(&[("topic", TOPIC), ("data", &big)]).await;
    assert_eq!(
        r.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "with Content-Length"
    );

    // Without Content-Length (chunked), the limit applies while reading.
    let body = format!("topic=t&data={big}");
    let chunks = futures_util::stream::iter(
        body.into_bytes()
            .chunks(256)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = send(
        client()
            .post(hub.url())
            .bearer_auth(hub.publisher_token())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(hubbub_testkit::reqwest::Body::wrap_stream(chunks)),
    )
    .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "chunked");
}

#[tokio::test]
async fn topic_counts_are_capped_on_publish_and_subscribe() {
    let hub = TestHub::start(Config {
        max_topics: 2,
        ..config()
    })
    .await;
    let two = [("topic", "a"), ("topic", "b")];
    let three = [("topic", "a"), ("topic", "b"), ("topic", "c")];
    assert_eq!(hub.publish(&two).await.status, StatusCode::OK);
    // Draft-08: a publish limit exceeded is 413, a subscribe one 400.
    assert_eq!(
        hub.publish(&three).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );

    let ok = SseClient::get(&hub.subscribe_url(&["a", "b"])).await;
    assert_eq!(ok.status, StatusCode::OK);
    let over = SseClient::get(&hub.subscribe_url(&["a", "b", "c"])).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn the_protocol_caps_topics_at_1000_by_default() {
    let hub = TestHub::start(config()).await;
    let topics: Vec<String> = (0..1001).map(|i| format!("t{i}")).collect();
    let form: Vec<(&str, &str)> = topics.iter().map(|t| ("topic", t.as_str())).collect();
    assert_eq!(hub.publish(&form[..1000]).await.status, StatusCode::OK);
    assert_eq!(
        hub.publish(&form).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let over = SseClient::get(&hub.subscribe_url(&refs)).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn max_subscribers_answers_503_with_retry_after() {
    let hub = TestHub::start(Config {
        max_subscribers: 2,
        ..config()
    })
    .await;
    let first = hub.subscribe(&[TOPIC]).await;
    let _second = hub.subscribe(&[TOPIC]).await;
    let third = SseClient::get(&hub.subscribe_url(&[TOPIC])).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    let retry: u64 = third
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry >= 1);

    // Leaving frees the place (once the server notices the closed connection).
    drop(first);
    let url = hub.subscribe_url(&[TOPIC]);
    let _again = eventually(hubbub_testkit::WAIT, "a freed subscriber slot", || async {
        let sse = SseClient::get(&url).await;
        (sse.status == StatusCode::OK).then_some(sse)
    })
    .await;
}

#[tokio::test]
async fn the_per_client_publish_rate_answers_429_with_retry_after() {
    let hub = TestHub::start(Config {
        publish_rate: 0.1,
        publish_burst: 2,
        ..config()
    })
    .await;
    let form = [("topic", TOPIC)];
    assert_eq!(hub.publish(&form).await.status, StatusCode::OK);
    assert_eq!(hub.publish(&form).await.status, StatusCode::OK);
    let limited = hub.publish(&form).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!(retry >= 1, "{retry}");

    // Another client (another token) has its own budget.
    let other = hubbub_testkit::token(
        hubbub_testkit::KEY,
        serde_json::json!({"publish": ["*"], "payload": "other"}),
    );
    let r = hubbub_testkit::publish(&hub.url(), &other, &form).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn the_global_publish_rate_limits_everyone_together() {
    let hub = TestHub::start(Config {
        global_publish_rate: 0.1,
        publish_burst: 2,
        ..config()
    })
    .await;
    let form = [("topic", TOPIC)];
    let tokens: Vec<String> = (0..3)
        .map(|i| {
            hubbub_testkit::token(
                hubbub_testkit::KEY,
                serde_json::json!({"publish": ["*"], "payload": i}),
            )
        })
        .collect();
    assert_eq!(
        hubbub_testkit::publish(&hub.url(), &tokens[0], &form)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        hubbub_testkit::publish(&hub.url(), &tokens[1], &form)
            .await
            .status,
        StatusCode::OK
    );
    let limited = hubbub_testkit::publish(&hub.url(), &tokens[2], &form).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test]
async fn max_connections_answers_503() {
    let hub = TestHub::start(Config {
        max_connections: 2,
        ..config()
    })
    .await;
    let first = hub.subscribe(&[TOPIC]).await;
    let _second = hub.subscribe(&[TOPIC]).await;

    // A client that waits for the server before sending anything is answered too.
    let mut third = RawConn::connect(hub.addr).await;
    let answer = String::from_utf8_lossy(&third.read_to_close().await).into_owned();
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "over the connection cap: {answer:?}"
    );
    assert!(
        answer.to_ascii_lowercase().contains("retry-after:"),
        "{answer:?}"
    );

    drop(first);
    eventually(hubbub_testkit::WAIT, "a freed connection slot", || async {
        let mut conn = RawConn::connect(hub.addr).await;
        conn.send_get("/healthz", &[("connection", "close")]).await;
        let head = conn.read_head().await;
        (head.status == 200).then_some(())
    })
    .await;
}

/// Over the connection cap, a client that sends its request at once (as every
/// HTTP client does) must read the 503, not a reset: closing a socket with the
/// request unread would reset it. Many times, since a reset is a race.
#[tokio::test]
async fn a_refused_request_reads_503_not_a_reset() {
    let hub = TestHub::start(Config {
        max_connections: 2,
        ..config()
    })
    .await;
    let _held = [hub.subscribe(&[TOPIC]).await, hub.subscribe(&[TOPIC]).await];
    for i in 0..50 {
        let mut conn = RawConn::connect(hub.addr).await;
        conn.send_get("/healthz", &[]).await;
        let answer = conn
            .try_read_to_close()
            .await
            .unwrap_or_else(|e| panic!("refusal {i}: {e} instead of a 503 and a close"));
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(
            answer.starts_with("http/1.1 503"),
            "refusal {i}: {answer:?}"
        );
        assert!(
            answer.contains("\r\nretry-after: "),
            "refusal {i}: {answer:?}"
        );
    }
}

/// A publish body trickled in (one byte every 200 ms: never idle long, so only
/// a bound on the whole body helps) is cut at `request_timeout` with a 408.
#[tokio::test]
async fn a_trickled_body_is_cut_at_the_request_timeout() {
    let hub = TestHub::start(Config {
        request_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    hub.publish_ok(&[("topic", TOPIC), ("data", "in one go")])
        .await;

    let body = format!("topic={TOPIC}&data={}", "x".repeat(200));
    let mut conn = RawConn::connect(hub.addr).await;
    conn.write(
        format!(
            "POST /.well-known/mercure HTTP/1.1\r\nHost: hubbub.test\r\n\
             Authorization: Bearer {}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\n\r\n",
            hub.publisher_token(),
            body.len()
        )
        .as_bytes(),
    )
    .await;
    let started = std::time::Instant::now();
    let head = conn
        .trickle(
            body.as_bytes(),
            Duration::from_millis(200),
            Duration::from_secs(8),
        )
        .await
        .expect("an answer long before the trickled body is complete");
    assert_eq!(head.status, 408, "{head:?}");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    conn.read_to_close().await;
    assert_eq!(
        hub.metric("hubbub_requests_rejected_total{reason=\"request_timeout\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(
        hub.metric("hubbub_updates_published_total").await,
        Some(1.0)
    );
}

/// A topic is one non-empty line of text: an empty topic, or one with CR, LF
/// or NUL (which would break the frame or the logs), is refused with a reason,
/// as a published topic (canonical or alternate) and as a subscribe selector.
#[tokio::test]
async fn empty_or_multi_line_topics_are_400() {
    let hub = TestHub::start(config()).await;
    let form = "application/x-www-form-urlencoded";
    for (what, encoded) in [
        ("empty", ""),
        ("LF", "a%0Ab"),
        ("CR", "a%0Db"),
        ("NUL", "a%00b"),
    ] {
        for body in [
            format!("topic={encoded}"),
            format!("topic=t&topic={encoded}"),
        ] {
            let r = send(
                client()
                    .post(hub.url())
                    .bearer_auth(hub.publisher_token())
                    .header("content-type", form)
                    .body(body.clone()),
            )
            .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "publish {what}: {body}");
            assert!(r.body.contains("topic"), "publish {what}: {:?}", r.body);
        }
        for query in [
            format!("topic={encoded}"),
            format!("topic=t&topic={encoded}"),
        ] {
            // Status first: a subscription accepted by mistake would never end.
            let mut sse = SseClient::get(&format!("{}?{query}", hub.url())).await;
            assert_eq!(
                sse.status,
                StatusCode::BAD_REQUEST,
                "subscribe {what}: {query}"
            );
            sse.expect_end(hubbub_testkit::WAIT).await;
            let body = String::from_utf8_lossy(sse.raw());
            assert!(body.contains("topic"), "subscribe {what}: {body:?}");
        }
    }
    assert_eq!(
        hub.metric("hubbub_updates_published_total").await,
        Some(0.0)
    );
    assert_eq!(hub.metric("hubbub_subscribers").await, Some(0.0));
}

/// A subscriber chooses its selectors, a publisher its topics, and matching
/// one against the other costs up to (template states) x (topic bytes): both
/// are bounded, 400 beyond. A 4 KB template (the review used 40 KB) is refused; a
/// realistic one is not; the worst template accepted, matched against the
/// longest topic accepted, costs milliseconds, not seconds.
#[tokio::test]
async fn selector_size_and_template_complexity_are_bounded() {
    let hub = TestHub::start(config()).await;
    let huge = format!("https://example.com/{}", "{+a}".repeat(1_000));
    let too_long = SseClient::get(&hub.subscribe_url(&[&huge])).await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    // Short, but each expression adds states.
    let complex = format!("https://example.com/{}", "{a}".repeat(60));
    let refused = SseClient::get(&hub.subscribe_url(&[&complex])).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    let realistic = "https://example.com/users/{user}/books/{book}{.format}{?fields*}";
    let ok = SseClient::get(&hub.subscribe_url(&[realistic])).await;
    assert_eq!(ok.status, StatusCode::OK);

    let longest = format!("https://example.com/{}", "a/".repeat(1014));
    assert_eq!(longest.len(), 2048);
    let at_limit = hub.publish(&[("topic", longest.as_str())]).await;
    assert_eq!(at_limit.status, StatusCode::OK);
    let over = format!("{longest}b");
    let refused = hub.publish(&[("topic", over.as_str())]).await;
    assert_eq!(refused.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(refused.body.contains("max_topic_bytes"), "{}", refused.body);

    // The worst accepted template: as many `{+a}` as fit in 200 states.
    let mut worst = "https://example.com/".to_owned();
    while hubbub_proto::Selector::parse(&format!("{worst}{{+a}}"))
        .unwrap()
        .states()
        <= 200
    {
        worst.push_str("{+a}");
    }
    let accepted = SseClient::get(&hub.subscribe_url(&[&worst])).await;
    assert_eq!(accepted.status, StatusCode::OK, "{worst}");
    let selector = hubbub_proto::Selector::parse(&worst).unwrap();
    let started = std::time::Instant::now();
    assert!(selector.matches(&longest));
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(1),
        "the worst accepted match took {took:?}"
    );
}

/// Subscribers that stop reading all at once (as when the writers cannot keep
/// up) slow publishers down, then refuse them with 503 + `Retry-After`, before
/// anyone's queue overflows; once they read again, publishing goes on.
#[tokio::test]
async fn a_fanout_backlog_answers_503_before_queues_overflow() {
    let hub = TestHub::start(Config {
        queue_capacity: 32,
        fanout_wait: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut subscribers = Vec::new();
    for _ in 0..8 {
        let mut conn = RawConn::connect_with_small_buffer(hub.addr).await;
        conn.send_get(&format!("/.well-known/mercure?topic={TOPIC}"), &[])
            .await;
        assert_eq!(conn.read_head().await.status, 200);
        subscribers.push(conn);
    }
    let data = "x".repeat(16 * 1024);
    let mut accepted = Vec::new();
    let refused = loop {
        assert!(accepted.len() < 500, "no 503 after 500 publishes");
        let id = format!("urn:backlog:{}", accepted.len());
        let response = hub
            .publish(&[("topic", TOPIC), ("id", &id), ("data", &data)])
            .await;
        if response.status != StatusCode::OK {
            break response;
        }
        accepted.push(id);
    };
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        hub.metric("hubbub_slow_consumer_disconnects_total").await,
        Some(0.0)
    );
    // Every accepted update still reaches every subscriber, and once they
    // have read, publishing is accepted again.
    let last = accepted.last().expect("some publishes were accepted");
    for conn in &mut subscribers {
        conn.skip_until(format!("id: {last}\n").as_bytes()).await;
    }
    hub.publish_ok(&[("topic", TOPIC), ("data", "after")]).await;
}
