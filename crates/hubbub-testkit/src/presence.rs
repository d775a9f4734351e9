//! Following a hub's active subscriptions the way the draft tells a client
//! to: fetch the collection, then subscribe to the subscription events from
//! its cursor and apply each. Records every change that changed nothing (a
//! start of a listed subscription, an end of an unlisted one): a repeat or a
//! gap between the list and the events.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::{SseClient, StatusCode, WAIT, client, encode_form, lock, send};

/// The subscriptions API's path, and a URL Pattern over all its events.
pub const SUBSCRIPTIONS: &str = "/.well-known/mercure/subscriptions";
pub const ALL_EVENTS: &str = "/.well-known/mercure/subscriptions/*";

/// `GET {base}/.well-known/mercure/subscriptions` with a 1.0 token: the
/// subscriptions by id, and the cursor of the `Link` header.
pub async fn list(base_url: &str, token: &str) -> (BTreeMap<String, Value>, String) {
    let r = send(
        client()
            .get(format!("{base_url}{SUBSCRIPTIONS}"))
            .bearer_auth(token),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let body: Value = serde_json::from_str(&r.body).expect("JSON");
    let link = r.header("link").expect("a Link header").to_owned();
    let start = link.find("last-event-id=\"").expect("a cursor") + 15;
    let cursor = link[start..start + link[start..].find('"').expect("quoted")].to_owned();
    let subs = body["subscriptions"]
        .as_array()
        .expect("subscriptions")
        .iter()
        .map(|d| (d["id"].as_str().expect("id").to_owned(), d.clone()))
        .collect();
    (subs, cursor)
}

/// The matchers (`match`) of a listing.
pub fn matchers(subs: &BTreeMap<String, Value>) -> BTreeSet<String> {
    subs.values()
        .map(|d| d["match"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[derive(Debug, Default)]
struct Followed {
    active: BTreeMap<String, Value>,
    /// (id, active) in arrival order.
    events: Vec<(String, bool)>,
    /// Events that changed nothing: they should never happen.
    repeats: Vec<String>,
}

/// A client keeping a live list: the collection, then the events after its cursor.
#[derive(Debug)]
pub struct PresenceFollower {
    state: Arc<Mutex<Followed>>,
    task: tokio::task::JoinHandle<()>,
}

impl PresenceFollower {
    pub async fn start(base_url: &str, token: &str) -> Self {
        let (active, cursor) = list(base_url, token).await;
        let url = format!(
            "{base_url}/.well-known/mercure?{}",
            encode_form(&[("match_urlpattern", ALL_EVENTS), ("last_event_id", &cursor)])
        );
        let mut sse = SseClient::connect(client().get(url).bearer_auth(token)).await;
        assert_eq!(sse.status, StatusCode::OK);
        let state = Arc::new(Mutex::new(Followed {
            active,
            ..Followed::default()
        }));
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Some(e) = sse.next_event(Duration::from_secs(3600)).await {
                if e.event_type.as_deref() != Some("mercure") {
                    continue;
                }
                let doc: Value = serde_json::from_str(&e.data).expect("JSON event");
                let id = doc["id"].as_str().expect("id").to_owned();
                let on = doc["active"].as_bool().expect("active");
                let mut f = lock(&s);
                f.events.push((id.clone(), on));
                let changed = if on {
                    f.active.insert(id.clone(), doc).is_none()
                } else {
                    f.active.remove(&id).is_some()
                };
                if !changed {
                    f.repeats.push(format!("{id} active={on}"));
                }
            }
        });
        Self { state, task }
    }

    /// The subscriptions this client believes active, by id.
    pub fn active(&self) -> BTreeMap<String, Value> {
        lock(&self.state).active.clone()
    }

    pub fn events(&self) -> Vec<(String, bool)> {
        lock(&self.state).events.clone()
    }

    pub fn repeats(&self) -> Vec<String> {
        lock(&self.state).repeats.clone()
    }

    /// Waits (up to `timeout`, default [`WAIT`]) until `check` holds for the
    /// followed list; panics with `what` and the list otherwise.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Option<Duration>,
        check: impl Fn(&BTreeMap<String, Value>) -> bool,
    ) {
        let timeout = timeout.unwrap_or(WAIT);
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if check(&lock(&self.state).active) {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; followed list: {:?}",
                    matchers(&self.active())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PresenceFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}
