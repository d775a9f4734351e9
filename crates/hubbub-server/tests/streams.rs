//! The life of a stream: heartbeats, maximum lifetime, token expiry, the
//! slow-consumer cut, hot reload under an open stream, and graceful shutdown.

use std::time::Duration;

use hubbub_testkit::{
    Config, Item, KEY, RawConn, SseClient, StatusCode, TestHub, WAIT, client, config, publisher,
    subscriber, token_expiring_in,
};
use serde_json::json;

const TOPIC: &str = "https://example.com/books/1";

/// Counts comment lines until `n` have arrived (panicking after [`WAIT`]).
async fn expect_comments(sub: &mut SseClient, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = 0;
    while seen < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match sub.next_item(left).await {
            Some(Item::Comment(_)) => seen += 1,
            Some(Item::Event(e)) => panic!("expected only comments, got {e:?}"),
            None => panic!("{seen} of {n} comments arrived; end: {:?}", sub.end()),
        }
    }
}

#[tokio::test]
async fn heartbeats_arrive_on_an_idle_stream() {
    let hub = TestHub::start(Config {
        heartbeat: Duration::from_millis(200),
        ..config()
    })
    .await;
    let mut sub = hub.subscribe(&[TOPIC]).await;
    // The open comment, then at least two heartbeats.
    expect_comments(&mut sub, 3).await;
    let raw = String::from_utf8_lossy(sub.raw()).into_owned();
    assert!(raw.lines().all(|l| l.starts_with(':')), "{raw:?}");
    // Events still flow between heartbeats.
    hub.publish_ok(&[("topic", TOPIC), ("id", "e")]).await;
    assert_eq!(sub.expect_event().await.id.as_deref(), Some("e"));
}

#[tokio::test]
async fn the_maximum_lifetime_ends_the_stream_cleanly() {
    let hub = TestHub::start(Config {
        write_timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    let mut sub = hub.subscribe(&[TOPIC]).await;
    hub.publish_ok(&[("topic", TOPIC), ("id", "before")]).await;
    let ended = sub.expect_end(WAIT).await;
    assert!(ended.clean, "a clean end, so the client reconnects");
    assert_eq!(ended.events().len(), 1, "{:?}", ended.items);
    hub.wait_metric_at_least(
        "hubbub_subscriptions_closed_total{reason=\"lifetime\"}",
        1.0,
    )
    .await;
}

#[tokio::test]
async fn an_expiring_token_ends_the_stream() {
    let hub = TestHub::start(config()).await;
    let tok = token_expiring_in(KEY, json!({"subscribe": ["*"]}), 2);
    let mut expiring = hub.subscribe_with(&[TOPIC], &tok).await;
    let mut lasting = hub.subscribe_with(&[TOPIC], &subscriber(KEY, &["*"])).await;
    let ended = expiring.expect_end(WAIT).await;
    assert!(ended.clean);
    hub.wait_metric_at_least(
        "hubbub_subscriptions_closed_total{reason=\"token_expired\"}",
        1.0,
    )
    .await;
    // A token without exp keeps its stream.
    hub.publish_ok(&[("topic", TOPIC), ("id", "after")]).await;
    assert_eq!(lasting.expect_event().await.id.as_deref(), Some("after"));
}

/// A subscriber that never reads is cut once its queue overflows, while a
/// reading subscriber gets every update and publishers never wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_and_the_others_get_everything() {
    let hub = TestHub::start(Config {
        queue_capacity: 4,
        // Off, so only the queue policy can cut the stalled subscriber.
        write_deadline: Duration::ZERO,
        ..config()
    })
    .await;
    let mut stalled = stalled_subscriber(&hub).await;
    let mut reader = hub.subscribe(&[TOPIC]).await;
    let reading = tokio::spawn(async move {
        let mut ids = Vec::new();
        loop {
            let id = reader.expect_event().await.id.unwrap_or_default();
            if id == "end" {
                return ids;
            }
            ids.push(id);
        }
    });

    // Big updates fill the stalled socket's buffers quickly; stop once it is cut.
    let data = "x".repeat(128 * 1024);
    let counter = "hubbub_slow_consumer_disconnects_total";
    let mut published = Vec::new();
    for i in 0..400 {
        let id = format!("big-{i}");
        hub.publish_ok(&[("topic", TOPIC), ("id", &id), ("data", &data)])
            .await;
        published.push(id);
        if i % 8 == 7 && hub.metric(counter).await.unwrap_or(0.0) >= 1.0 {
            break;
        }
    }
    assert!(
        hub.metric(counter).await.unwrap_or(0.0) >= 1.0,
        "the stalled subscriber was never cut after {} updates",
        published.len()
    );
    hub.publish_ok(&[("topic", TOPIC), ("id", "end")]).await;

    let got = tokio::time::timeout(WAIT * 3, reading)
        .await
        .expect("the reading subscriber keeps up")
        .expect("the reader did not panic");
    assert_eq!(got, published, "the reading subscriber got every update");
    assert!(
        stalled.drain_until_end(WAIT).await,
        "the stalled subscriber's stream ends"
    );
}

#[tokio::test]
async fn reload_applies_new_settings_without_dropping_streams() {
    let mut hub = TestHub::start(Config {
        heartbeat: Duration::ZERO,
        max_topics: 1,
        ..config()
    })
    .await;
    let old_sub = subscriber(KEY, &["*"]);
    let mut sub = hub.subscribe_with(&[TOPIC], &old_sub).await;
    assert_eq!(
        sub.next_item(WAIT).await,
        Some(Item::Comment(String::new()))
    );
    let two = [
        ("topic", TOPIC),
        ("topic", "https://example.com/x"),
        ("id", "two"),
    ];
    assert_eq!(
        hub.publish(&two).await.status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(
        sub.next_item(Duration::from_millis(600)).await,
        None,
        "no heartbeat while they are off"
    );

    let new_key = "a-new-key-after-reload";
    let reloaded = Config {
        heartbeat: Duration::from_millis(200),
        max_topics: 5,
        jwt_key: Some(new_key.into()),
        ..config()
    };
    hub.server().reload(reloaded.settings().expect("valid"));

    expect_comments(&mut sub, 2).await;
    let old_pub = hub.publish(&two).await;
    assert_eq!(
        old_pub.status,
        StatusCode::UNAUTHORIZED,
        "the old key is gone"
    );
    let r = hubbub_testkit::publish(&hub.url(), &publisher(new_key), &two).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "two topics are fine now: {}",
        r.body
    );
    assert_eq!(
        sub.expect_event().await.id.as_deref(),
        Some("two"),
        "the stream opened before the reload still receives"
    );
    assert_eq!(
        hub.metric("hubbub_config_reloads_total{result=\"ok\"}")
            .await,
        Some(1.0)
    );
    let new_sub = SseClient::connect(
        client()
            .get(hub.subscribe_url(&[TOPIC]))
            .bearer_auth(&old_sub),
    )
    .await;
    assert_eq!(
        new_sub.status,
        StatusCode::UNAUTHORIZED,
        "new streams need the new key"
    );
    hub.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn reload_of_history_and_subscriber_limits() {
    let hub = TestHub::start(config()).await;
    for id in ["h1", "h2", "h3"] {
        hub.publish_ok(&[("topic", TOPIC), ("id", id)]).await;
    }
    let _a = hub.subscribe(&[TOPIC]).await;
    let _b = hub.subscribe(&[TOPIC]).await;
    hub.server().reload(
        Config {
            history_size: 1,
            max_subscribers: 2,
            ..config()
        }
        .settings()
        .expect("valid"),
    );
    assert_eq!(hub.metric("hubbub_history_entries").await, Some(1.0));
    let third = SseClient::get(&hub.subscribe_url(&[TOPIC])).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_refuses_new_connections() {
    let mut hub = TestHub::start(config()).await;
    let mut a = hub.subscribe(&[TOPIC]).await;
    let mut b = hub.subscribe(&["*"]).await;
    hub.publish_ok(&[("topic", TOPIC), ("id", "last")]).await;
    assert_eq!(a.expect_event().await.id.as_deref(), Some("last"));
    assert_eq!(b.expect_event().await.id.as_deref(), Some("last"));

    hub.shutdown().await.expect("the server stops cleanly");
    for (name, sub) in [("a", &mut a), ("b", &mut b)] {
        let ended = sub.expect_end(WAIT).await;
        assert!(ended.clean, "{name}: a clean end of stream, not a reset");
        assert!(ended.events().is_empty(), "{name}: {:?}", ended.items);
    }
    assert!(
        tokio::net::TcpStream::connect(hub.addr).await.is_err(),
        "the listener is closed"
    );
}

/// The shutdown order over a real server. On this single-threaded runtime the
/// watcher below runs at the server's first wait after `StopAccepting`, which
/// is inside the drain (60 streams are spread over 30 ms): so it sees the
/// node not ready and the listener closed while streams are still owed their
/// end; every stream then ends drained (a `retry`, a clean end), and the steps
/// were done in the written order, the cluster last.
#[tokio::test]
async fn shutdown_stops_accepting_before_streams_end_and_the_cluster_last() {
    use hubbub_server::ShutdownStep::*;
    let mut hub = TestHub::start(config()).await;
    let mut streams = Vec::new();
    for _ in 0..60 {
        streams.push(hub.subscribe(&[TOPIC]).await);
    }
    let (server, addr) = (hub.server().clone(), hub.addr);
    let mut steps = server.shutdown_steps();
    let watcher = tokio::spawn(async move {
        let steps = steps.wait_for(|s| s.contains(&StopAccepting)).await;
        let draining = !steps
            .expect("the server records its steps")
            .contains(&DrainStreams);
        let ready = server.is_ready();
        let refused = tokio::net::TcpStream::connect(addr).await.is_err();
        (draining, ready, refused)
    });
    hub.shutdown().await.expect("the server stops cleanly");
    let (draining, ready, refused) = watcher.await.expect("the watcher ran");
    assert!(
        draining,
        "streams were still draining when accepting stopped"
    );
    assert!(!ready, "/readyz says 503 from the first step");
    assert!(refused, "the listener was closed in the first step");
    for stream in &mut streams {
        assert!(stream.expect_end(WAIT).await.clean, "a clean end");
        assert!(
            stream.reconnection_time().is_some(),
            "drained: told to retry"
        );
    }
    let done = hub.server().shutdown_steps().borrow().clone();
    let order = [
        StopAccepting,
        LeaveCluster,
        DrainStreams,
        StopHub,
        CloseConnections,
        StopCluster,
    ];
    assert_eq!(done, order);
}

/// Opens a subscription on a connection that will never be read.
async fn stalled_subscriber(hub: &TestHub) -> RawConn {
    let mut conn = RawConn::connect_with_small_buffer(hub.addr).await;
    let target = &hub.subscribe_url(&[TOPIC])[hub.base_url().len()..];
    conn.send_get(target, &[("accept", "text/event-stream")])
        .await;
    assert_eq!(conn.read_head().await.status, 200);
    conn
}

/// Publishes enough to fill any socket buffer between the hub and a stalled reader.
async fn flood(hub: &TestHub, updates: usize) {
    let data = "x".repeat(128 * 1024);
    for i in 0..updates {
        hub.publish_ok(&[("topic", TOPIC), ("id", &format!("f{i}")), ("data", &data)])
            .await;
    }
}

#[tokio::test]
async fn subscribers_that_leave_are_forgotten() {
    let hub = TestHub::start(config()).await;
    let subs = [
        hub.subscribe(&[TOPIC]).await,
        hub.subscribe(&["*"]).await,
        hub.subscribe(&["https://example.com/{id}"]).await,
    ];
    assert_eq!(hub.metric("hubbub_subscribers").await, Some(3.0));
    drop(subs);
    // Idle streams too: the hub notices the closed connections without a write.
    hubbub_testkit::eventually(WAIT, "hubbub_subscribers back to 0", || async {
        (hub.metric("hubbub_subscribers").await == Some(0.0)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_write_is_cut_after_the_write_deadline() {
    let hub = TestHub::start(Config {
        write_deadline: Duration::from_secs(1),
        ..config()
    })
    .await;
    let _stalled = stalled_subscriber(&hub).await;
    assert_eq!(hub.metric("hubbub_subscribers").await, Some(1.0));
    flood(&hub, 64).await;
    // The queue (capacity 1000) never overflows: only the deadline can free it.
    hubbub_testkit::eventually(WAIT, "the stuck subscriber is dropped", || async {
        (hub.metric("hubbub_subscribers").await == Some(0.0)).then_some(())
    })
    .await;
    assert_eq!(
        hub.metric("hubbub_slow_consumer_disconnects_total").await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period() {
    let mut hub = TestHub::start(Config {
        write_deadline: Duration::ZERO,
        shutdown_grace: Duration::from_secs(1),
        ..config()
    })
    .await;
    let _stalled = stalled_subscriber(&hub).await;
    let mut reader = hub.subscribe(&[TOPIC]).await;
    flood(&hub, 64).await;
    // TestHub::shutdown panics unless `run` returns within WAIT (10 s).
    hub.shutdown().await.expect("a clean return");
    // Pending frames are dropped at shutdown (clients resume), but the stream ends
    // properly for a reader that keeps up.
    assert!(reader.expect_end(WAIT).await.clean);
}

/// A subscription that is not the connection's first request (here pipelined
/// behind a health check) is served by hyper, whose response body takes the
/// subscription instead of the lean writer: it streams the same way.
#[tokio::test]
async fn a_subscription_after_another_request_on_the_connection_streams() {
    let hub = TestHub::start(config()).await;
    let mut conn = RawConn::connect(hub.addr).await;
    let target = &hub.subscribe_url(&[TOPIC])[hub.base_url().len()..];
    conn.write(
        format!(
            "GET /healthz HTTP/1.1\r\nHost: hubbub.test\r\n\r\n\
             GET {target} HTTP/1.1\r\nHost: hubbub.test\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    conn.read_until(b"text/event-stream").await;
    for id in ["k1", "k2"] {
        hub.publish_ok(&[("topic", TOPIC), ("id", id), ("data", "x")])
            .await;
        conn.read_until(format!("id: {id}\n").as_bytes()).await;
    }
    assert_eq!(hub.metric("hubbub_subscribers").await, Some(1.0));
}
