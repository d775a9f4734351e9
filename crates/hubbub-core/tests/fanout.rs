//! The engine's contract, exercised through its public API on a real runtime.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hubbub_core::{
    CloseReason, Hub, HubConfig, Limits, Next, NoMetrics, Resume, SubscribeError, SubscribeRequest,
    Subscription,
};
use hubbub_proto::{Selector, Update};

fn hub(limits: Limits) -> Hub {
    Hub::start(
        HubConfig {
            limits,
            shards: 2,
            dispatch_backlog: 1024,
        },
        Arc::new(NoMetrics),
    )
}

fn update(id: &str, topics: &[&str]) -> Update {
    Update {
        id: id.into(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        data: format!("data of {id}"),
        private: false,
        event_type: None,
        retry: None,
    }
}

fn request(selectors: &[&str], resume: Resume) -> SubscribeRequest {
    SubscribeRequest {
        selectors: selectors
            .iter()
            .map(|s| Selector::parse(s).unwrap())
            .collect(),
        resume,
        ..Default::default()
    }
}

async fn next_id(sub: &mut Subscription) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("no frame in 5 s")
        {
            Next::Frame(f) if f.starts_with(b":") => continue,
            Next::Frame(f) => {
                let text = String::from_utf8(f.to_vec()).unwrap();
                let id = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap();
                return id.to_string();
            }
            Next::Closed(reason) => panic!("closed: {reason:?}"),
        }
    }
}

async fn assert_quiet(sub: &mut Subscription) {
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sub.try_next(), None);
}

#[tokio::test]
async fn exact_any_and_template_selectors() {
    let hub = hub(Limits::default());
    let mut exact = hub
        .subscribe(request(&["https://a/1"], Resume::Live))
        .unwrap();
    let mut any = hub.subscribe(request(&["*"], Resume::Live)).unwrap();
    let mut tpl = hub
        .subscribe(request(&["https://a/{id}"], Resume::Live))
        .unwrap();
    hub.publish(update("u1", &["https://a/1"])).unwrap();
    hub.publish(update("u2", &["https://a/2"])).unwrap();
    hub.publish(update("u3", &["https://b/1/x"])).unwrap();
    assert_eq!(next_id(&mut exact).await, "u1");
    assert_quiet(&mut exact).await;
    for want in ["u1", "u2", "u3"] {
        assert_eq!(next_id(&mut any).await, want);
    }
    assert_eq!(next_id(&mut tpl).await, "u1");
    assert_eq!(next_id(&mut tpl).await, "u2");
    assert_quiet(&mut tpl).await;
}

#[tokio::test]
async fn several_matches_deliver_once() {
    let hub = hub(Limits::default());
    let mut sub = hub
        .subscribe(request(
            &["https://a/1", "https://a/2", "*", "https://a/{x}"],
            Resume::Live,
        ))
        .unwrap();
    hub.publish(update("u1", &["https://a/1", "https://a/2"]))
        .unwrap();
    hub.publish(update("u2", &["https://a/2"])).unwrap();
    assert_eq!(next_id(&mut sub).await, "u1");
    assert_eq!(next_id(&mut sub).await, "u2");
    assert_quiet(&mut sub).await;
}

#[tokio::test]
async fn private_updates_need_a_matching_claim() {
    let hub = hub(Limits::default());
    let mut public = hub.subscribe(request(&["*"], Resume::Live)).unwrap();
    let mut wrong = hub
        .subscribe(SubscribeRequest {
            claims: Some(vec![Selector::parse("https://b/{x}").unwrap()]),
            ..request(&["*"], Resume::Live)
        })
        .unwrap();
    let mut right = hub
        .subscribe(SubscribeRequest {
            claims: Some(vec![Selector::parse("https://a/{x}").unwrap()]),
            ..request(&["*"], Resume::Live)
        })
        .unwrap();
    let mut secret = update("p1", &["https://a/1"]);
    secret.private = true;
    hub.publish(secret).unwrap();
    hub.publish(update("u2", &["https://a/1"])).unwrap();
    assert_eq!(next_id(&mut right).await, "p1");
    assert_eq!(next_id(&mut right).await, "u2");
    assert_eq!(next_id(&mut public).await, "u2");
    assert_eq!(next_id(&mut wrong).await, "u2");
}

#[tokio::test]
async fn resume_replays_then_goes_live_without_gap_or_duplicate() {
    let hub = hub(Limits::default());
    for i in 1..=5 {
        hub.publish(update(&format!("u{i}"), &["t"])).unwrap();
    }
    let mut sub = hub
        .subscribe(request(&["t"], Resume::After("u2".into())))
        .unwrap();
    assert_eq!(sub.response_last_event_id(), Some("u2"));
    assert_eq!(sub.replay_len(), 3);
    hub.publish(update("u6", &["t"])).unwrap();
    for want in ["u3", "u4", "u5", "u6"] {
        assert_eq!(next_id(&mut sub).await, want);
    }
    assert_quiet(&mut sub).await;

    let early = hub.subscribe(request(&["t"], Resume::Earliest)).unwrap();
    assert_eq!(
        (early.response_last_event_id(), early.replay_len()),
        (Some("earliest"), 6)
    );
    let unknown = hub
        .subscribe(request(&["t"], Resume::After("nope".into())))
        .unwrap();
    assert_eq!(
        (unknown.response_last_event_id(), unknown.replay_len()),
        (Some("earliest"), 0)
    );
    let live = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    assert_eq!(live.response_last_event_id(), None);
}

/// Publishing while subscribers register must never lose or repeat an update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_subscribe_and_publish_keep_every_update_once() {
    let hub = hub(Limits {
        queue_capacity: 100_000,
        ..Limits::default()
    });
    let publisher = {
        let hub = hub.clone();
        tokio::spawn(async move {
            for i in 0..2000 {
                hub.publish(update(&format!("u{i}"), &["t"])).unwrap();
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let mut subs = Vec::new();
    for _ in 0..20 {
        subs.push(hub.subscribe(request(&["t"], Resume::Earliest)).unwrap());
        tokio::task::yield_now().await;
    }
    publisher.await.unwrap();
    for mut sub in subs {
        for i in 0..2000 {
            assert_eq!(next_id(&mut sub).await, format!("u{i}"));
        }
        assert_quiet(&mut sub).await;
    }
}

#[tokio::test]
async fn slow_consumer_is_closed_and_others_are_not() {
    let hub = hub(Limits {
        queue_capacity: 3,
        ..Limits::default()
    });
    let mut slow = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    let mut fast = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    for i in 0..10 {
        hub.publish(update(&format!("u{i}"), &["t"])).unwrap();
        assert_eq!(next_id(&mut fast).await, format!("u{i}"));
    }
    assert_eq!(slow.next().await, Next::Closed(CloseReason::SlowConsumer));
    // It resumes from the last id it got and loses nothing.
    let mut again = hub
        .subscribe(request(&["t"], Resume::After("u1".into())))
        .unwrap();
    for i in 2..10 {
        assert_eq!(next_id(&mut again).await, format!("u{i}"));
    }
}

#[tokio::test]
async fn max_subscribers_is_enforced_and_freed_on_drop() {
    let hub = hub(Limits {
        max_subscribers: 2,
        ..Limits::default()
    });
    let a = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    let _b = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    assert_eq!(
        hub.subscribe(request(&["t"], Resume::Live)).unwrap_err(),
        SubscribeError::TooManySubscribers(2)
    );
    drop(a);
    assert_eq!(hub.subscriber_count(), 1);
    hub.subscribe(request(&["t"], Resume::Live)).unwrap();
}

#[tokio::test]
async fn heartbeats_fill_silence_and_deadlines_end_streams() {
    let hub = hub(Limits {
        heartbeat: Some(Duration::from_millis(100)),
        ..Limits::default()
    });
    let mut sub = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .unwrap();
    assert_eq!(frame, Next::Frame(bytes::Bytes::from_static(b":\n")));

    let deadline = Instant::now() + Duration::from_millis(200);
    let mut short = hub
        .subscribe(SubscribeRequest {
            deadline: Some((deadline, CloseReason::TokenExpired)),
            ..request(&["t"], Resume::Live)
        })
        .unwrap();
    let end = loop {
        match tokio::time::timeout(Duration::from_secs(3), short.next())
            .await
            .unwrap()
        {
            Next::Frame(_) => continue,
            Next::Closed(reason) => break reason,
        }
    };
    assert_eq!(end, CloseReason::TokenExpired);
    assert!(Instant::now() >= deadline);
}

#[tokio::test]
async fn history_limits_apply_live() {
    let hub = hub(Limits::default());
    for i in 0..10 {
        hub.publish(update(&format!("u{i}"), &["t"])).unwrap();
    }
    assert_eq!(hub.history_size().0, 10);
    let mut limits = hub.limits();
    limits.history.max_entries = 4;
    hub.set_limits(limits);
    assert_eq!(hub.history_size().0, 4);
}

#[tokio::test]
async fn shutdown_ends_streams_and_refuses_work() {
    let hub = hub(Limits::default());
    let mut sub = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    hub.shutdown().await;
    assert_eq!(sub.next().await, Next::Closed(CloseReason::Shutdown));
    assert!(hub.publish(update("x", &["t"])).is_err());
    assert_eq!(
        hub.subscribe(request(&["t"], Resume::Live)).unwrap_err(),
        SubscribeError::ShuttingDown
    );
}

/// The batched read used by the server's writer: replay first, then live
/// frames, in order and each once; the end of the stream after the last frame.
#[tokio::test]
async fn try_next_into_batches_replay_then_live_then_reports_the_end() {
    let hub = hub(Limits::default());
    for i in 0..3 {
        hub.publish(update(&format!("old{i}"), &["t"])).unwrap();
    }
    let mut sub = hub.subscribe(request(&["t"], Resume::Earliest)).unwrap();
    for i in 0..3 {
        hub.publish(update(&format!("new{i}"), &["t"])).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let ids = |frames: &[bytes::Bytes]| -> Vec<String> {
        frames
            .iter()
            .filter(|f| !f.starts_with(b":"))
            .map(|f| {
                let text = std::str::from_utf8(f).unwrap();
                let id = text.lines().find_map(|l| l.strip_prefix("id: "));
                id.unwrap().to_string()
            })
            .collect()
    };
    let mut out: [bytes::Bytes; 4] = Default::default();
    let n = sub.try_next_into(&mut out).unwrap();
    assert_eq!(ids(&out[..n]), ["old0", "old1", "old2", "new0"]);
    let n = sub.try_next_into(&mut out).unwrap();
    assert_eq!(ids(&out[..n]), ["new1", "new2"]);
    assert_eq!(sub.try_next_into(&mut out), Ok(0));
    hub.shutdown().await;
    assert_eq!(sub.try_next_into(&mut out), Err(CloseReason::Shutdown));
}

/// A drained stream gets what was queued, then a jittered `retry`, then its
/// end; a later shutdown does not drop those last frames; streams are ended
/// spread over the window at `DRAIN_RATE`, not all at once, and publishing
/// keeps working for streams not yet ended.
#[tokio::test(start_paused = true)]
async fn drain_ends_streams_gracefully_and_spread_out() {
    let hub = hub(Limits::default());
    let mut first = hub.subscribe(request(&["*"], Resume::Live)).unwrap();
    hub.publish(update("queued", &["t"])).unwrap();
    // Let the dispatcher queue it before the drain starts.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let n = 4_000; // two seconds' worth at DRAIN_RATE
    let mut others: Vec<Subscription> = (0..n)
        .map(|_| hub.subscribe(request(&["*"], Resume::Live)).unwrap())
        .collect();
    let started = tokio::time::Instant::now();
    let drain = tokio::spawn({
        let hub = hub.clone();
        async move {
            hub.drain(Duration::from_secs(60), Duration::from_millis(500))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    hub.publish(update("during", &["t"])).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(drain.await.unwrap(), n + 1);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(3),
        "{n} streams at {} per second took {took:?}",
        hubbub_core::DRAIN_RATE
    );
    hub.shutdown().await;

    let mut frames = Vec::new();
    loop {
        match first.next().await {
            Next::Frame(f) => frames.push(String::from_utf8(f.to_vec()).unwrap()),
            Next::Closed(reason) => {
                assert_eq!(reason, CloseReason::Shutdown);
                break;
            }
        }
    }
    assert!(frames[0].contains("id: queued"), "{frames:?}");
    let retry: u64 = frames
        .last()
        .unwrap()
        .strip_prefix("retry: ")
        .and_then(|r| r.trim().parse().ok())
        .unwrap_or_else(|| panic!("last frame is no retry field: {frames:?}"));
    assert!((500..1000).contains(&retry), "retry {retry}");

    // The last stream to be ended was still live when "during" was published.
    let last = others.last_mut().unwrap();
    let mut got_during = false;
    let mut retries = std::collections::HashSet::new();
    while let Next::Frame(f) = last.next().await {
        got_during |= String::from_utf8_lossy(&f).contains("id: during\n");
        if f.starts_with(b"retry: ") {
            retries.insert(f);
        }
    }
    assert!(
        got_during,
        "a stream ended late still received live updates"
    );
    for sub in others.iter_mut().take(50) {
        while let Next::Frame(f) = sub.next().await {
            if f.starts_with(b"retry: ") {
                retries.insert(f);
            }
        }
    }
    assert!(retries.len() > 10, "retry values are jittered: {retries:?}");
}

/// Replaying a long history through heavy selectors costs the subscriber's
/// task, not the hub: publishes are not held up while it runs (the history is
/// matched outside the lock publishers take).
#[test]
fn a_heavy_replay_does_not_hold_up_publishers() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut limits = Limits::default();
    limits.history.max_entries = 20_000;
    let hub = hub(limits);
    // Distinct topics, so the per-subscription match cache cannot help.
    for i in 0..20_000 {
        let u = update(&format!("h{i}"), &[&format!("https://a/{i}/x")]);
        // The dispatch backlog is small: wait it out.
        while hub.publish(u.clone()).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let selectors: Vec<String> = (0..200)
        .map(|i| format!("https://b/{i}/{{a}}{{/b,c}}{{?d,e}}"))
        .collect();
    let heavy = {
        let hub = hub.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            let refs: Vec<&str> = selectors.iter().map(String::as_str).collect();
            let sub = hub.subscribe(request(&refs, Resume::Earliest)).unwrap();
            (started.elapsed(), sub.replay_len())
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        hub.publish(update(&format!("p{i}"), &["https://a/p"]))
            .unwrap();
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    let (replay_took, replayed) = heavy.join().unwrap();
    assert_eq!(replayed, 0, "no history entry matches those selectors");
    assert!(
        replay_took > Duration::from_millis(200),
        "the replay must be heavy for this test to mean anything: {replay_took:?}"
    );
    assert!(
        slowest * 4 < replay_took,
        "a publish waited {slowest:?} during a replay of {replay_took:?}"
    );
}

/// A full dispatch backlog is a signal to await, not to poll: the publish that
/// found it full succeeds once `publish_capacity` returns.
#[tokio::test]
async fn a_full_backlog_frees_room_that_can_be_awaited() {
    let hub = Hub::start(
        HubConfig {
            limits: Limits::default(),
            shards: 1,
            dispatch_backlog: 1,
        },
        Arc::new(NoMetrics),
    );
    // One runtime thread: the dispatcher cannot take the first update before we yield.
    hub.publish(update("a", &["t"])).unwrap();
    assert_eq!(
        hub.publish(update("b", &["t"])).unwrap_err(),
        hubbub_core::PublishError::Overloaded
    );
    tokio::time::timeout(Duration::from_secs(5), hub.publish_capacity())
        .await
        .expect("the dispatcher makes room");
    hub.publish(update("b", &["t"])).expect("room for b");
    hub.shutdown().await;
    tokio::time::timeout(Duration::from_secs(5), hub.publish_capacity())
        .await
        .expect("a stopped hub does not keep callers waiting");
}

fn queues_of(capacity: usize) -> Limits {
    Limits {
        queue_capacity: capacity,
        ..Limits::default()
    }
}

/// Publishes `n` updates to topic `t` and waits until every reader of
/// `readers` got them (so the dispatchers are done with them).
async fn publish_and_read(hub: &Hub, n: usize, readers: &mut [Subscription]) {
    for i in 0..n {
        hub.publish(update(&format!("u{i}"), &["t"])).unwrap();
    }
    for sub in readers.iter_mut() {
        for i in 0..n {
            assert_eq!(next_id(sub).await, format!("u{i}"));
        }
    }
}

#[tokio::test]
async fn the_backlog_is_what_most_queues_hold_and_slows_publishers() {
    let hub = hub(queues_of(80));
    // 24 subscribers, none reading: their queues are the writers' backlog.
    let mut idle: Vec<Subscription> = (0..24)
        .map(|_| hub.subscribe(request(&["t"], Resume::Live)).unwrap())
        .collect();
    let mut probe = hub.subscribe(request(&["t"], Resume::Live)).unwrap();
    publish_and_read(&hub, 20, std::slice::from_mut(&mut probe)).await;
    assert_eq!(hub.fanout_backlog(), 20);
    // Updates the dispatchers have not fanned out yet (this runtime has one
    // thread: they run only when the test yields) count as frames to come.
    let idle_hub = hub.clone();
    let sent = (20..30)
        .map(|i| idle_hub.publish(update(&format!("u{i}"), &["t"])).is_ok())
        .filter(|ok| *ok)
        .count();
    assert_eq!(sent, 10);
    assert_eq!(hub.fanout_backlog(), 30);
    for i in 20..30 {
        assert_eq!(next_id(&mut probe).await, format!("u{i}"));
    }
    assert_eq!(hub.fanout_backlog(), 30, "now queued instead");
    // Over an eighth of 80: a publisher waits, and is refused after its limit.
    let started = Instant::now();
    assert_eq!(hub.fanout_room(Duration::from_millis(50)).await, Err(30));
    assert!(started.elapsed() >= Duration::from_millis(50));
    // The writers catch up while a publisher waits: it goes on.
    let waiting = tokio::spawn({
        let hub = hub.clone();
        async move { hub.fanout_room(Duration::from_secs(5)).await }
    });
    for sub in &mut idle {
        for i in 0..30 {
            assert_eq!(next_id(sub).await, format!("u{i}"));
        }
    }
    assert!(waiting.await.unwrap().is_ok());
    assert_eq!(hub.fanout_backlog(), 0);
}

#[tokio::test]
async fn slow_consumers_do_not_slow_publishers() {
    let hub = hub(queues_of(80));
    // 11 of 24 never read (under half): the median queue is a reader's.
    let _slow: Vec<Subscription> = (0..11)
        .map(|_| hub.subscribe(request(&["t"], Resume::Live)).unwrap())
        .collect();
    let mut readers: Vec<Subscription> = (0..13)
        .map(|_| hub.subscribe(request(&["t"], Resume::Live)).unwrap())
        .collect();
    publish_and_read(&hub, 40, &mut readers).await;
    assert_eq!(hub.fanout_backlog(), 0);
    assert_eq!(hub.fanout_room(Duration::ZERO).await, Ok(0));

    // A handful of subscribers measures nothing, however far behind.
    let few = self::hub(queues_of(80));
    let _stuck: Vec<Subscription> = (0..3)
        .map(|_| few.subscribe(request(&["t"], Resume::Live)).unwrap())
        .collect();
    let mut probe = few.subscribe(request(&["t"], Resume::Live)).unwrap();
    publish_and_read(&few, 40, std::slice::from_mut(&mut probe)).await;
    assert_eq!(few.fanout_backlog(), 0);
}
