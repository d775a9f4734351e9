//! Active subscriptions on one node, over real sockets: subscription events in
//! both generations' forms, the subscriptions API and its cursor, and who may
//! read them (the attacker's side: no token, a token for other topics, a
//! forged event, a client-chosen subscriber id).
//! The cluster-wide behaviour is in `tests/presence_cluster.rs`.

use std::time::Duration;

use hubbub_proto::token::{access_token_claims, mint_access_token};
use hubbub_testkit::{
    Config, Event, HttpResponse, KEY, SseClient, StatusCode, TestHub, client, config, encode_form,
    send, subscriber,
};
use serde_json::{Value, json};

const BOOK: &str = "https://example.com/books/1";
const RESOURCE: &str = "https://hub.example/.well-known/mercure";
const ISS: &str = "https://hs.example";
const SECRET: &str = "hs-issuer-secret-0123456789abcdef";
const EVENTS: &str = "/.well-known/mercure/subscriptions/*";
const API: &str = "/.well-known/mercure/subscriptions";

fn presence_config() -> Config {
    Config {
        subscriptions: Some(true),
        oauth_issuers: vec![format!("{ISS}|HS256|{SECRET}")],
        oauth_resource: Some(RESOURCE.into()),
        ..config()
    }
}

/// Mercure 1.0 only: no 0.x twins of the events.
fn v1_only() -> Config {
    Config {
        compat_0x: false,
        jwt_key: None,
        ..presence_config()
    }
}

/// The next subscription event of the 1.0 form (SSE type `mercure`),
/// skipping 0.x twins (a pattern over the whole namespace matches both).
async fn next_v1(sse: &mut SseClient) -> Event {
    loop {
        let e = sse.expect_event().await;
        if e.event_type.as_deref() == Some("mercure") {
            return e;
        }
    }
}

/// A 1.0 token granting subscribe on `topics`, with `payload` if given.
fn v1_token(topics: &[&str], payload: Option<Value>) -> String {
    let mut claims = access_token_claims(
        ISS,
        RESOURCE,
        &[(&["subscribe"], topics)],
        Duration::from_secs(300),
    );
    if let Some(p) = payload {
        claims["authorization_details"][0]["payload"] = p;
    }
    mint_access_token("HS256", SECRET, &claims).unwrap()
}

async fn subscribe_v1(hub: &TestHub, params: &[(&str, &str)], token: &str) -> SseClient {
    let url = format!("{}?{}", hub.url(), encode_form(params));
    let sse = SseClient::connect(client().get(url).bearer_auth(token)).await;
    assert_eq!(sse.status, StatusCode::OK, "subscribe {params:?}");
    sse
}

async fn api(hub: &TestHub, path: &str, token: Option<&str>) -> HttpResponse {
    let mut r = client().get(format!("{}{path}", hub.base_url()));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    send(r).await
}

fn doc(e: &Event) -> Value {
    serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("JSON event data: {:?}", e.data))
}

/// The `last-event-id` of a `Link: <…>; rel="mercure"; last-event-id="…"` header.
fn cursor(r: &HttpResponse) -> String {
    let link = r.header("link").expect("a Link header");
    assert!(link.contains("rel=\"mercure\""), "{link}");
    let start = link.find("last-event-id=\"").expect("last-event-id") + 15;
    let end = start + link[start..].find('"').unwrap();
    let c = link[start..end].to_owned();
    assert_eq!(r.header("etag"), Some(&*format!("\"{c}\"")));
    c
}

#[tokio::test]
async fn a_subscription_is_announced_and_ended_in_both_generations() {
    let hub = TestHub::start(presence_config()).await;
    let v0_token = subscriber(KEY, &["*"]);
    let mut v0 = SseClient::subscribe(
        &hub.url(),
        &["/.well-known/mercure/subscriptions/{topic}/{subscriber}"],
        Some(&v0_token),
    )
    .await;
    let own = v0.expect_event().await;
    assert_eq!(
        doc(&own)["topic"],
        "/.well-known/mercure/subscriptions/{topic}/{subscriber}"
    );
    let watcher = v1_token(&["*"], None);
    let mut v1 = subscribe_v1(&hub, &[("match_urlpattern", EVENTS)], &watcher).await;
    let own = next_v1(&mut v1).await;
    assert_eq!(doc(&own)["match"], EVENTS);
    assert_eq!(doc(&v0.expect_event().await)["topic"], EVENTS);

    let alice = v1_token(&["*"], Some(json!({"name": "alice"})));
    // A client cannot choose its subscriber id: unknown parameters are ignored.
    let sub = subscribe_v1(&hub, &[("match", BOOK), ("subscriber", "urn:evil")], &alice).await;
    let on = next_v1(&mut v1).await;
    assert_eq!(on.event_type.as_deref(), Some("mercure"));
    let d = doc(&on);
    assert_eq!(d["type"], "subscription");
    assert_eq!(d["match_type"], "exact");
    assert_eq!(d["match"], BOOK);
    assert_eq!(d["active"], true);
    assert_eq!(d["payload"], json!({"name": "alice"}));
    let subscriber = d["subscriber"].as_str().unwrap().to_owned();
    assert!(subscriber.starts_with("urn:uuid:"), "{subscriber}");
    assert_ne!(subscriber, "urn:evil");
    let topic = d["id"].as_str().unwrap().to_owned();
    assert_eq!(
        topic,
        format!(
            "/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fexample.com%2Fbooks%2F1/{}",
            subscriber.replace(':', "%3A")
        )
    );
    let legacy = v0.expect_event().await;
    assert_eq!(legacy.event_type, None, "0.x events keep the default type");
    let l = doc(&legacy);
    assert_eq!(l["@context"], "https://mercure.rocks/");
    assert_eq!(l["type"], "Subscription");
    assert_eq!(l["topic"], BOOK);
    assert_eq!(l["subscriber"], subscriber.as_str());
    assert_eq!(l["active"], true);

    drop(sub);
    let off = next_v1(&mut v1).await;
    assert_eq!(doc(&off)["active"], false);
    assert_eq!(doc(&off)["id"], topic.as_str());
    assert_eq!(doc(&v0.expect_event().await)["active"], false);
    v0.expect_no_event(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn the_list_and_the_events_after_its_cursor_miss_and_repeat_nothing() {
    let hub = TestHub::start(v1_only()).await;
    let token = v1_token(&["*"], None);
    let a = subscribe_v1(&hub, &[("match", BOOK)], &token).await;
    let b = subscribe_v1(
        &hub,
        &[("match_urlpattern", "https://example.com/books/:id")],
        &token,
    )
    .await;
    // Wait until both are listed.
    let mut listed = Vec::new();
    for _ in 0..100 {
        let r = api(&hub, API, Some(&token)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["type"], "subscriptions");
        assert_eq!(body["id"], API);
        listed = body["subscriptions"].as_array().unwrap().clone();
        if listed.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed.len(), 2, "{listed:?}");
    let r = api(&hub, API, Some(&token)).await;
    let from = cursor(&r);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).unwrap()["lastEventID"],
        from.as_str()
    );

    drop(a);
    let mut follow = subscribe_v1(
        &hub,
        &[("match_urlpattern", EVENTS), ("last_event_id", &from)],
        &token,
    )
    .await;
    // Exactly: a's end, then the follower's own start; never b's start again.
    let first = doc(&follow.expect_event().await);
    assert_eq!(
        (first["match"].as_str(), first["active"].as_bool()),
        (Some(BOOK), Some(false))
    );
    let second = doc(&follow.expect_event().await);
    assert_eq!(
        (second["match"].as_str(), second["active"].as_bool()),
        (Some(EVENTS), Some(true))
    );
    follow.expect_no_event(Duration::from_millis(300)).await;

    // Per matcher and one subscription.
    let pattern = "https://example.com/books/:id";
    let enc = |s: &str| encode_form(&[("x", s)])[2..].replace('+', "%20");
    let per = api(
        &hub,
        &format!("{API}/urlpattern/{}", enc(pattern)),
        Some(&token),
    )
    .await;
    let per: Value = serde_json::from_str(&per.body).unwrap();
    let list = per["subscriptions"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    let id = list[0]["id"].as_str().unwrap();
    let one = api(&hub, id, Some(&token)).await;
    assert_eq!(one.status, StatusCode::OK);
    let one_doc: Value = serde_json::from_str(&one.body).unwrap();
    assert_eq!(one_doc, list[0]);
    assert!(one.header("link").is_some());
    let gone = api(
        &hub,
        &format!("{API}/exact/{}/urn%3Auuid%3Anobody", enc(BOOK)),
        Some(&token),
    )
    .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    drop(b);
}

#[tokio::test]
async fn the_api_needs_a_token_that_covers_the_path() {
    let hub = TestHub::start(presence_config()).await;
    let r = api(&hub, API, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.starts_with("Bearer"))
    );
    let other = v1_token(&[BOOK], None);
    let r = api(&hub, API, Some(&other)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.header("www-authenticate")
            .is_some_and(|h| h.contains("insufficient_scope"))
    );
    // A grant on one matcher's collection covers it, not the whole list.
    let narrow_path = format!("{API}/exact/https%3A%2F%2Fexample.com%2Fbooks%2F1");
    let narrow = v1_token(&[&narrow_path], None);
    assert_eq!(
        api(&hub, &narrow_path, Some(&narrow)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        api(&hub, API, Some(&narrow)).await.status,
        StatusCode::FORBIDDEN
    );
    // The same path with other (valid) encodings is the same resource.
    let lower = narrow_path.replace("%3A", "%3a");
    assert_eq!(
        api(&hub, &lower, Some(&narrow)).await.status,
        StatusCode::OK
    );
    // 0.x tokens get the JSON-LD shapes.
    let v0 = subscriber(KEY, &["*"]);
    let r = api(&hub, API, Some(&v0)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/ld+json"));
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["@context"], "https://mercure.rocks/");
    assert_eq!(body["type"], "Subscriptions");
    // Bad encodings are refused.
    assert_eq!(
        api(&hub, &format!("{API}/%FF"), Some(&v0)).await.status,
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn events_are_private_and_only_the_hub_writes_them() {
    let hub = TestHub::start(presence_config()).await;
    // Anonymous and narrowly-authorized subscribers to the namespace see nothing.
    let anonymous = SseClient::get(&format!(
        "{}?{}",
        hub.url(),
        encode_form(&[("match_urlpattern", EVENTS)])
    ))
    .await;
    assert_eq!(anonymous.status, StatusCode::OK);
    let mut anonymous = anonymous;
    let narrow = v1_token(&[BOOK], None);
    let mut narrow_sub = subscribe_v1(&hub, &[("match_urlpattern", EVENTS)], &narrow).await;
    let _x = subscribe_v1(&hub, &[("match", BOOK)], &narrow).await;
    anonymous.expect_no_event(Duration::from_millis(500)).await;
    narrow_sub.expect_no_event(Duration::from_millis(100)).await;
    // A publisher cannot forge one: the type and the namespace are refused.
    let forged = json!({"id": "x", "type": "subscription"}).to_string();
    let r = hub
        .publish(&[("topic", BOOK), ("type", "mercure"), ("data", &forged)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = hub
        .publish(&[
            ("topic", "/.well-known/mercure/subscriptions/exact/x/y"),
            ("data", &forged),
        ])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn off_by_default_the_api_is_404_and_nothing_is_announced() {
    let hub = TestHub::start(Config {
        subscriptions: Some(false),
        ..presence_config()
    })
    .await;
    let token = v1_token(&["*"], None);
    assert_eq!(
        api(&hub, API, Some(&token)).await.status,
        StatusCode::NOT_FOUND
    );
    let mut w = subscribe_v1(&hub, &[("match_urlpattern", EVENTS)], &token).await;
    let _s = subscribe_v1(&hub, &[("match", BOOK)], &token).await;
    w.expect_no_event(Duration::from_millis(500)).await;
    let meta = send(client().get(format!(
        "{}/.well-known/oauth-protected-resource/.well-known/mercure",
        hub.base_url()
    )))
    .await;
    assert!(!meta.body.contains("mercure_subscriptions"));
    let on = TestHub::start(presence_config()).await;
    let meta = send(client().get(format!(
        "{}/.well-known/oauth-protected-resource/.well-known/mercure",
        on.base_url()
    )))
    .await;
    let meta: Value = serde_json::from_str(&meta.body).unwrap();
    assert_eq!(meta["mercure_subscriptions"], true);
}

#[tokio::test]
async fn beyond_the_cap_subscriptions_are_served_but_not_tracked() {
    let hub = TestHub::start(Config {
        max_tracked_subscriptions: 2,
        ..presence_config()
    })
    .await;
    let token = v1_token(&["*"], None);
    let listed = |hub: &TestHub| {
        let url = format!("{}{API}", hub.base_url());
        let token = token.clone();
        async move {
            let r = send(client().get(url).bearer_auth(token)).await;
            let body: Value = serde_json::from_str(&r.body).unwrap();
            body["subscriptions"].as_array().unwrap().len()
        }
    };
    let a = subscribe_v1(&hub, &[("match", "https://example.com/a")], &token).await;
    let _b = subscribe_v1(&hub, &[("match", "https://example.com/b")], &token).await;
    let mut c = subscribe_v1(&hub, &[("match", "https://example.com/c")], &token).await;
    hubbub_testkit::eventually(
        hubbub_testkit::WAIT,
        "the third is refused by the table",
        || async {
            (hub.metric("hubbub_presence_events_dropped_total{reason=\"full\"}")
                .await?
                >= 1.0)
                .then_some(())
        },
    )
    .await;
    assert_eq!(listed(&hub).await, 2);
    // Still served: it receives its updates.
    hub.publish_on("for-c", &["https://example.com/c"], false)
        .await;
    assert_eq!(c.expect_event().await.id.as_deref(), Some("for-c"));
    // Room again once one ends.
    drop(a);
    let _d = subscribe_v1(&hub, &[("match", "https://example.com/d")], &token).await;
    hubbub_testkit::eventually(hubbub_testkit::WAIT, "d tracked", || async {
        let r = send(
            client()
                .get(format!("{}{API}", hub.base_url()))
                .bearer_auth(v1_token(&["*"], None)),
        )
        .await;
        r.body.contains("example.com%2Fd").then_some(())
    })
    .await;
    assert_eq!(listed(&hub).await, 2);
}

#[tokio::test]
async fn an_oversized_payload_is_left_out_and_an_oversized_path_refused() {
    let hub = TestHub::start(v1_only()).await;
    let watcher = v1_token(&["*"], None);
    let mut w = subscribe_v1(&hub, &[("match_urlpattern", EVENTS)], &watcher).await;
    let _own = next_v1(&mut w).await;
    let big = v1_token(&["*"], Some(json!({"blob": "x".repeat(5000)})));
    let _s = subscribe_v1(&hub, &[("match", BOOK)], &big).await;
    let d = doc(&next_v1(&mut w).await);
    assert_eq!(d["match"], BOOK, "still tracked");
    assert!(
        d.get("payload").is_none(),
        "a payload over 4 KiB is not copied: {d}"
    );
    let long = format!("{API}/exact/{}", "a".repeat(17 * 1024));
    assert_eq!(
        api(&hub, &long, Some(&watcher)).await.status,
        StatusCode::BAD_REQUEST
    );
}
