//! Resuming: `Last-Event-ID` header and `lastEventID` query, `earliest`, unknown
//! and evicted ids, the response's `Last-Event-ID`, and the replay/live handover
//! (nothing missed, nothing twice), including right after a stream opens.

use std::time::Duration;

use hubbub_testkit::{Config, SseClient, StatusCode, TestHub, client, config};

const TOPIC: &str = "https://example.com/books/1";
const OTHER: &str = "https://example.com/authors/1";

async fn publish_ids(hub: &TestHub, topic: &str, ids: &[&str]) {
    for id in ids {
        hub.publish_ok(&[("topic", topic), ("id", id), ("data", id)])
            .await;
    }
}

/// Subscribes to `TOPIC` with an optional `Last-Event-ID` header and `lastEventID` query.
async fn resume(hub: &TestHub, header: Option<&str>, query: Option<&str>) -> SseClient {
    let mut url = hub.subscribe_url(&[TOPIC]);
    if let Some(q) = query {
        url.push_str(&format!("&lastEventID={q}"));
    }
    let mut request = client().get(url);
    if let Some(h) = header {
        request = request.header("last-event-id", h);
    }
    let sse = SseClient::connect(request).await;
    assert_eq!(sse.status, StatusCode::OK);
    sse
}

#[tokio::test]
async fn header_resume_replays_the_missed_updates_then_goes_live() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, TOPIC, &["a1", "a2"]).await;
    publish_ids(&hub, OTHER, &["o1"]).await;
    publish_ids(&hub, TOPIC, &["a3"]).await;

    let mut sub = resume(&hub, Some("a1"), None).await;
    assert_eq!(sub.header("last-event-id"), Some("a1"));
    assert_eq!(
        sub.ids(2).await,
        ["a2", "a3"],
        "only matching updates replay"
    );
    publish_ids(&hub, TOPIC, &["a4"]).await;
    assert_eq!(sub.ids(1).await, ["a4"]);
    sub.expect_no_event(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn query_resume_and_header_precedence() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, TOPIC, &["a1", "a2", "a3"]).await;

    let mut by_query = resume(&hub, None, Some("a2")).await;
    assert_eq!(by_query.header("last-event-id"), Some("a2"));
    let mut both = resume(&hub, Some("a2"), Some("a1")).await;
    assert_eq!(both.header("last-event-id"), Some("a2"), "the header wins");

    publish_ids(&hub, TOPIC, &["live"]).await;
    assert_eq!(by_query.ids(2).await, ["a3", "live"]);
    assert_eq!(both.ids(2).await, ["a3", "live"]);
}

#[tokio::test]
async fn earliest_replays_everything_retained() {
    let hub = TestHub::start(config()).await;
    let mut empty = resume(&hub, Some("earliest"), None).await;
    assert_eq!(
        empty.header("last-event-id"),
        Some("earliest"),
        "empty history"
    );

    publish_ids(&hub, TOPIC, &["a1", "a2"]).await;
    let mut sub = resume(&hub, None, Some("earliest")).await;
    assert_eq!(sub.header("last-event-id"), Some("earliest"));
    assert_eq!(sub.ids(2).await, ["a1", "a2"]);
    assert_eq!(
        empty.ids(2).await,
        ["a1", "a2"],
        "published after it opened: live"
    );
}

#[tokio::test]
async fn an_unknown_id_replays_nothing_and_answers_earliest() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, TOPIC, &["a1", "a2"]).await;
    let mut sub = resume(&hub, Some("never-published"), None).await;
    assert_eq!(sub.header("last-event-id"), Some("earliest"));
    publish_ids(&hub, TOPIC, &["live"]).await;
    assert_eq!(
        sub.ids(1).await,
        ["live"],
        "no replay before the live update"
    );
}

#[tokio::test]
async fn history_is_bounded_and_an_evicted_id_is_unknown() {
    let hub = TestHub::start(Config {
        history_size: 2,
        ..config()
    })
    .await;
    publish_ids(&hub, TOPIC, &["b1", "b2", "b3"]).await;

    let mut evicted = resume(&hub, Some("b1"), None).await;
    assert_eq!(evicted.header("last-event-id"), Some("earliest"));
    let mut kept = resume(&hub, Some("b2"), None).await;
    assert_eq!(kept.header("last-event-id"), Some("b2"));
    let mut earliest = resume(&hub, Some("earliest"), None).await;

    publish_ids(&hub, TOPIC, &["live"]).await;
    assert_eq!(evicted.ids(1).await, ["live"]);
    assert_eq!(kept.ids(2).await, ["b3", "live"]);
    assert_eq!(
        earliest.ids(3).await,
        ["b2", "b3", "live"],
        "two retained, then live"
    );
    assert_eq!(hub.metric("hubbub_history_entries").await, Some(2.0));
}

#[tokio::test]
async fn a_repeated_id_resumes_after_its_earliest_occurrence() {
    let hub = TestHub::start(config()).await;
    publish_ids(&hub, TOPIC, &["x", "y", "x", "z"]).await;
    let mut sub = resume(&hub, Some("x"), None).await;
    publish_ids(&hub, TOPIC, &["live"]).await;
    // Draft-08: the earliest "x", and every update after it, the reused id too.
    assert_eq!(sub.ids(4).await, ["y", "x", "z", "live"]);
}

/// Resumes while a publisher is busy: the subscriber must see one gap-free,
/// duplicate-free run from the id after its cursor to the last update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_during_publishing_misses_nothing_and_repeats_nothing() {
    let hub = std::sync::Arc::new(TestHub::start(config()).await);
    let ids: Vec<String> = (0..120).map(|i| format!("u{i}")).collect();
    let (reached_tx, reached_rx) = tokio::sync::oneshot::channel();
    let publisher = tokio::spawn({
        let (hub, ids) = (hub.clone(), ids.clone());
        async move {
            let mut reached_tx = Some(reached_tx);
            for (i, id) in ids.iter().enumerate() {
                hub.publish_ok(&[("topic", TOPIC), ("id", id)]).await;
                if i == 20 {
                    let _ = reached_tx.take().map(|tx| tx.send(()));
                }
            }
        }
    });
    reached_rx.await.expect("the publisher got going");
    let mut sub = resume(&hub, Some("u10"), None).await;
    publisher.await.expect("the publisher finished");

    let got = sub.ids(ids.len() - 11).await;
    assert_eq!(got, ids[11..], "u11..u119 exactly once, in order");
    sub.expect_no_event(Duration::from_millis(300)).await;
}

/// An update published as soon as the response headers are in must arrive.
#[tokio::test]
async fn nothing_is_lost_right_after_the_stream_opens() {
    let hub = TestHub::start(config()).await;
    for i in 0..50 {
        let id = format!("open-{i}");
        let mut sub = hub.subscribe(&[TOPIC]).await;
        hub.publish_ok(&[("topic", TOPIC), ("id", &id)]).await;
        assert_eq!(sub.ids(1).await, [id.as_str()], "iteration {i}");
    }
}

/// The same, publishing only after the `:` open comment, as an `EventSource`
/// user would after `open` fires.
#[tokio::test]
async fn nothing_is_lost_right_after_the_open_comment() {
    let hub = TestHub::start(config()).await;
    for i in 0..50 {
        let id = format!("open-{i}");
        let mut sub = hub.subscribe(&[TOPIC]).await;
        let open = sub.next_item(hubbub_testkit::WAIT).await;
        assert_eq!(open, Some(hubbub_testkit::Item::Comment(String::new())));
        hub.publish_ok(&[("topic", TOPIC), ("id", &id)]).await;
        assert_eq!(sub.ids(1).await, [id.as_str()], "iteration {i}");
    }
}
