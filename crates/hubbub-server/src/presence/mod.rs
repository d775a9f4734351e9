//! Mercure's active subscriptions, cluster-wide: subscription events when a
//! subscription starts or ends, and the table the subscriptions API reads.
//!
//! Events are updates, and on a cluster they travel the ordered relay like any
//! other: the owner (the node holding the connection) stamps the `active`
//! event and, when the connection ends, the `inactive` one. Every node applies
//! the released events to its [`table::Table`] in the cluster's one order and
//! delivers those that change it, so "the list at cursor X, then the events
//! after X" is the same on every node.
//!
//! Faults are repaired by more events, never by editing a table on the side:
//! - a node that departs (killed, partitioned away, restarted as a new
//!   generation) leaves entries nobody will end: after `grace`, the lowest
//!   ready node ends each of them (any other node too, should they still be
//!   there later); the table drops all but the first end, so each
//!   subscription ends exactly once in every node's history;
//! - an owner whose own subscription is missing from the table (ended by a
//!   node that thought it dead, or a lost event) announces it again, and
//!   one whose table holds a subscription it no longer has ends it;
//! - a node whose table disagrees with an owner's gossiped summary (count and
//!   digest) for `settle` (it joined after those events left every log, or
//!   lost some) asks that owner by name, which announces its subscriptions
//!   again: nodes holding them drop those as unchanged.
//!
//! Threat model: only the hub writes events (publishers cannot use the type
//! `mercure` nor the reserved topics: 400), relay peers are authenticated,
//! subscriber ids are random and never client-supplied, a payload comes from a
//! verified token, and events are private. Gossip is read only to decide to
//! ask for a re-announcement (at most once per `settle`) or to make one: a
//! forged request costs an owner one re-announcement per change of the
//! asker's value, dropped as unchanged everywhere.

pub mod event;
pub mod table;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hubbub_cluster::{Cluster, SubmitError};
use hubbub_core::{Hub, PublishError};
use hubbub_proto::Update;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::PresenceMetrics;
use event::Tracked;
use table::{Applied, Entry, Summary, Table};

/// Gossip keys (`Cluster::set_app_key`): this node's own subscriptions'
/// summary, and a counter it bumps to ask owners for a re-announcement.
const KEY_SUMMARY: &str = "presence";
const KEY_RESYNC: &str = "presence_resync";

/// A token `payload` longer than this is not copied into events (every event
/// and table entry carries it): the subscription is tracked without it.
pub const MAX_PAYLOAD_BYTES: usize = 4096;

/// How the repairs are paced.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How often the table is checked against reality.
    pub tick: Duration,
    /// How long an event may take to come back through the cluster's order
    /// before its absence counts as a loss.
    pub settle: Duration,
    /// How long a departed origin's subscriptions wait before being ended.
    pub grace: Duration,
}

impl Timing {
    /// From the cluster's `order_wait` (the longest a healthy release takes)
    /// and gossip interval (how fast membership news travels).
    pub fn for_cluster(order_wait: Duration, gossip_interval: Duration) -> Self {
        Self {
            tick: Duration::from_millis(500),
            settle: (order_wait * 2 + Duration::from_secs(1)).max(Duration::from_secs(2)),
            grace: (gossip_interval * 10).max(Duration::from_secs(1)),
        }
    }
}

impl Default for Timing {
    fn default() -> Self {
        Self::for_cluster(Duration::from_secs(1), Duration::from_millis(100))
    }
}

/// What this node's own connections hold, and what it still has to send.
#[derive(Debug, Default)]
struct Local {
    outbox: VecDeque<(Tracked, bool)>,
    /// Own live subscriptions by topic, with when they were (re)announced.
    live: HashMap<String, (Tracked, Instant)>,
    summary: Summary,
    /// Ends emitted and not yet seen applied, with when.
    ending: HashMap<String, Instant>,
}

/// The active-subscriptions service of one node. Shared (`Arc`).
#[derive(Debug)]
pub struct Presence {
    enabled: bool,
    /// This node's origin as the table names owners (`node/generation`, or
    /// `local` on a single node).
    owner: Arc<str>,
    hub: Hub,
    cluster: Option<Cluster>,
    compat_0x: bool,
    table: tokio::sync::Mutex<Table>,
    local: Mutex<Local>,
    wake: Notify,
    metrics: PresenceMetrics,
    timing: Timing,
}

/// Ends the tracked subscriptions of one connection when dropped (it is
/// attached to the connection's `Subscription`).
#[derive(Debug)]
pub struct Departure {
    presence: Arc<Presence>,
    topics: Vec<String>,
}

impl Drop for Departure {
    fn drop(&mut self) {
        self.presence.depart(&self.topics);
    }
}

impl Presence {
    pub fn new(
        enabled: bool,
        max_tracked: usize,
        hub: Hub,
        cluster: Option<Cluster>,
        compat_0x: bool,
        metrics: PresenceMetrics,
        timing: Timing,
    ) -> Self {
        let owner = cluster
            .as_ref()
            .map_or_else(|| "local".into(), |c| c.origin().to_string().into());
        Self {
            enabled,
            owner,
            hub,
            cluster,
            compat_0x,
            table: tokio::sync::Mutex::new(Table::new(max_tracked)),
            local: Mutex::default(),
            wake: Notify::new(),
            metrics,
            timing,
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts tracking one connection's subscriptions (one per matcher);
    /// they end when the returned value is dropped.
    pub fn announce(self: &Arc<Self>, tracked: Vec<Tracked>) -> Departure {
        let now = Instant::now();
        let mut topics = Vec::with_capacity(tracked.len());
        {
            let mut local = self.local();
            for t in tracked {
                let topic = t.topic();
                if local.live.contains_key(&topic) {
                    continue; // the same matcher twice on one connection
                }
                local.summary.add(&topic);
                local.outbox.push_back((t.clone(), true));
                local.live.insert(topic.clone(), (t, now));
                topics.push(topic);
            }
            self.metrics.local.set(local.live.len() as i64);
        }
        self.wake.notify_one();
        Departure {
            presence: self.clone(),
            topics,
        }
    }

    fn depart(&self, topics: &[String]) {
        let now = Instant::now();
        {
            let mut local = self.local();
            for topic in topics {
                if let Some((t, _)) = local.live.remove(topic) {
                    local.summary.remove(topic);
                    local.ending.insert(topic.clone(), now);
                    local.outbox.push_back((t, false));
                }
            }
            self.metrics.local.set(local.live.len() as i64);
        }
        self.wake.notify_one();
    }

    /// Before this node leaves its cluster: sends what is queued, then ends
    /// every own subscription, so peers see them end in order rather than
    /// after their `grace` for a departed node. Streams still open here stay
    /// open until drained; they are no longer tracked.
    pub async fn farewell(&self, limit: Duration) {
        if self.cluster.is_none() {
            return;
        }
        let stop = CancellationToken::new();
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        let done = async {
            self.flush(&stop).await;
            let own: Vec<(Tracked, bool)> = {
                let mut local = self.local();
                let now = Instant::now();
                let own: Vec<_> = local
                    .live
                    .drain()
                    .map(|(topic, (t, _))| (topic, t))
                    .collect();
                local.summary = Summary::default();
                for (topic, _) in &own {
                    local.ending.insert(topic.clone(), now);
                }
                own.into_iter().map(|(_, t)| (t, false)).collect()
            };
            self.metrics.local.set(0);
            self.local().outbox.extend(own);
            self.flush(&stop).await;
        };
        tokio::select! {
            () = done => {}
            () = &mut deadline => tracing::warn!(?limit, "leaving: not every subscription end was sent in time"),
        }
    }

    /// Applies one released subscription event (from any origin) and, if it
    /// changed the table, delivers it (and its 0.x twin) to the local hub,
    /// all under the table's lock, so a [`snapshot`](Self::snapshot) sees
    /// the table and the hub's history agree.
    pub async fn apply(&self, update: &Update, origin: &str) {
        let Some((tracked, active)) = event::parse(update) else {
            tracing::warn!(id = %update.id, "malformed subscription event dropped");
            return;
        };
        let mut table = self.table.lock().await;
        match table.apply(tracked.clone(), active, origin) {
            Applied::Changed => {
                self.metrics.tracked.set(table.len() as i64);
                self.metrics
                    .events
                    .with_label_values(&[if active { "true" } else { "false" }])
                    .inc();
                publish(&self.hub, update.clone()).await;
                if self.compat_0x {
                    publish(&self.hub, event::twin_v0(update, &tracked, active)).await;
                }
            }
            Applied::Unchanged => self.metrics.dropped.with_label_values(&["unchanged"]).inc(),
            Applied::Full => self.metrics.dropped.with_label_values(&["full"]).inc(),
        }
    }

    /// The subscriptions whose topic starts with one of `prefixes` (all for
    /// `[""]`), and the cursor to follow them from: the id of the newest
    /// update in the hub, read under the table's lock (every event enters the
    /// hub under it), so the list holds exactly the events up to the cursor.
    /// `earliest` when the hub holds nothing.
    pub async fn snapshot(&self, prefixes: &[String]) -> (Vec<Entry>, String) {
        let table = self.table.lock().await;
        let list = prefixes
            .iter()
            .flat_map(|p| table.with_prefix(p).cloned())
            .collect();
        (list, self.cursor())
    }

    /// The first of `topics` the table holds, and the cursor, as
    /// [`snapshot`](Self::snapshot).
    pub async fn get(&self, topics: &[String]) -> (Option<Entry>, String) {
        let table = self.table.lock().await;
        let found = topics.iter().find_map(|t| table.get(t).cloned());
        (found, self.cursor())
    }

    fn cursor(&self) -> String {
        self.hub
            .last_event_id()
            .map_or_else(|| "earliest".to_owned(), |id| id.to_string())
    }

    /// Sends queued events and repairs the table until `stop` fires.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.timing.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = Watch::default();
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
                _ = tick.tick() => self.reconcile(&mut watch).await,
            }
            self.flush(&stop).await;
        }
    }

    async fn flush(&self, stop: &CancellationToken) {
        loop {
            let Some((tracked, active)) = self.local().outbox.pop_front() else {
                return;
            };
            let update = tracked.event(active, format!("urn:uuid:{}", uuid::Uuid::now_v7()));
            self.metrics
                .emitted
                .with_label_values(&[if active { "true" } else { "false" }])
                .inc();
            let Some(cluster) = &self.cluster else {
                self.apply(&update, &self.owner).await;
                continue;
            };
            loop {
                match cluster.submit(update.clone()) {
                    Ok(_) => break,
                    Err(SubmitError::Overloaded) => {
                        if stop
                            .run_until_cancelled(tokio::time::sleep(Duration::from_millis(10)))
                            .await
                            .is_none()
                        {
                            return;
                        }
                    }
                    Err(SubmitError::ShuttingDown) => return,
                }
            }
        }
    }

    fn queue(&self, events: impl IntoIterator<Item = (Tracked, bool)>, kind: &str) {
        let mut local = self.local();
        let before = local.outbox.len();
        local.outbox.extend(events);
        let n = local.outbox.len() - before;
        if n > 0 {
            self.metrics
                .repairs
                .with_label_values(&[kind])
                .inc_by(n as u64);
        }
    }

    /// One round of repairs (see the module doc).
    async fn reconcile(&self, watch: &mut Watch) {
        let now = Instant::now();
        let settle = self.timing.settle;
        let view = self.cluster.as_ref().map(Cluster::view);
        let (reannounce, end_own, end_departed, summaries) = {
            let table = self.table.lock().await;
            let mut local = self.local();
            let local = &mut *local;
            let full = table.is_full();
            let mut reannounce = Vec::new();
            for (topic, (t, since)) in &mut local.live {
                if !full && table.get(topic).is_none() && now.duration_since(*since) >= settle {
                    *since = now;
                    reannounce.push((t.clone(), true));
                }
            }
            let mut end_own = Vec::new();
            for e in table.owned_by(&self.owner) {
                let topic = e.tracked.topic();
                if local.live.contains_key(&topic) {
                    continue;
                }
                if local
                    .ending
                    .get(&topic)
                    .is_none_or(|at| now.duration_since(*at) >= settle)
                {
                    local.ending.insert(topic, now);
                    end_own.push((e.tracked.clone(), false));
                }
            }
            local
                .ending
                .retain(|t, at| table.get(t).is_some() || now.duration_since(*at) < settle);
            let end_departed = view
                .as_ref()
                .map(|v| {
                    watch.departed(v, &table, &self.owner, now, &self.timing, &mut local.ending)
                })
                .unwrap_or_default();
            let summaries: BTreeMap<String, Summary> = view
                .as_ref()
                .map(|v| {
                    v.members
                        .iter()
                        .map(|m| {
                            let o = origin_of(m);
                            let s = table.summary(&o);
                            (o, s)
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.metrics.tracked.set(table.len() as i64);
            (reannounce, end_own, end_departed, summaries)
        };
        self.queue(reannounce, "reannounce");
        self.queue(end_own, "end_own");
        self.queue(end_departed, "end_departed");
        let (Some(cluster), Some(view)) = (&self.cluster, view) else {
            return;
        };
        cluster.set_app_key(KEY_SUMMARY, &self.local().summary.encode());
        let (resync, ask) = watch.gossip(&view, &summaries, &self.owner, now, settle);
        if !ask.is_empty() {
            self.metrics.diverged.inc();
            watch.asked += 1;
            cluster.set_app_key(KEY_RESYNC, &resync_request(watch.asked, &ask));
        }
        if resync {
            let all: Vec<_> = self
                .local()
                .live
                .values()
                .map(|(t, _)| (t.clone(), true))
                .collect();
            self.queue(all, "resync");
        }
    }
}

/// What the repair rounds remember between turns (owned by the `run` task).
#[derive(Debug, Default)]
struct Watch {
    /// Owners seen in the table but not among the members, since when.
    absent: HashMap<Arc<str>, Instant>,
    /// Each member's last seen resync request.
    resync_seen: HashMap<String, String>,
    /// A request naming us, not yet honoured, and when we last honoured one:
    /// at most one re-announcement per `settle`, whatever gossip says (gossip
    /// is unauthenticated: a stranger could ask every round).
    resync_pending: bool,
    last_resync: Option<Instant>,
    /// Per member origin: the (gossiped, ours) pair that disagreed, and since when.
    disagree: HashMap<String, (Summary, Summary, Instant)>,
    /// When we last asked for a re-announcement, and how often we did.
    last_ask: Option<Instant>,
    asked: u64,
}

impl Watch {
    /// Ends for the subscriptions of owners that left the membership more
    /// than `grace` ago: by the lowest ready node, or by anyone after three
    /// times that (the lowest may itself be gone or behind).
    fn departed(
        &mut self,
        view: &hubbub_cluster::ClusterView,
        table: &Table,
        me: &str,
        now: Instant,
        timing: &Timing,
        ending: &mut HashMap<String, Instant>,
    ) -> Vec<(Tracked, bool)> {
        if !view.ready {
            return Vec::new();
        }
        let live: HashSet<String> = view.members.iter().map(origin_of).collect();
        let lowest = view
            .members
            .iter()
            .filter(|m| m.ready && !m.leaving)
            .all(|m| *m.node > *view.node);
        let gone: Vec<Arc<str>> = table
            .owners()
            .map(|(o, _)| o.clone())
            .filter(|o| &**o != me && !live.contains(&**o))
            .collect();
        self.absent.retain(|o, _| gone.contains(o));
        let mut out = Vec::new();
        for owner in gone {
            let since = *self.absent.entry(owner.clone()).or_insert(now);
            let waited = now.duration_since(since);
            if !(waited >= timing.grace && lowest || waited >= timing.grace * 3) {
                continue;
            }
            for e in table.owned_by(&owner) {
                let topic = e.tracked.topic();
                if ending
                    .get(&topic)
                    .is_none_or(|at| now.duration_since(*at) >= timing.settle)
                {
                    ending.insert(topic, now);
                    out.push((e.tracked.clone(), false));
                }
            }
        }
        out
    }

    /// Reads the members' gossip: whether to re-announce all our own
    /// subscriptions (a member asks us by name), and which owners to ask for
    /// theirs (an owner's gossiped summary of its own subscriptions has
    /// disagreed with our table, unchanged, for `settle`: a node that joined
    /// after those subscriptions' events left every history, or one that
    /// lost events). At most one request per `settle`.
    fn gossip(
        &mut self,
        view: &hubbub_cluster::ClusterView,
        ours: &BTreeMap<String, Summary>,
        me: &str,
        now: Instant,
        settle: Duration,
    ) -> (bool, Vec<String>) {
        let mut resync = false;
        let mut ask = Vec::new();
        let may_ask = self
            .last_ask
            .is_none_or(|at| now.duration_since(at) >= settle);
        for m in &view.members {
            let origin = origin_of(m);
            if let Some(request) = m.app.get(KEY_RESYNC) {
                let seen = self.resync_seen.insert(origin.clone(), request.clone());
                if seen.as_ref() != Some(request) && names(request, me) {
                    self.resync_pending = true;
                }
            }
            let (Some(theirs), Some(ours)) = (
                m.app.get(KEY_SUMMARY).and_then(|s| Summary::decode(s)),
                ours.get(&origin),
            ) else {
                continue;
            };
            if theirs == *ours || !m.ready {
                self.disagree.remove(&origin);
                continue;
            }
            match self.disagree.get(&origin) {
                Some((t, o, since)) if *t == theirs && o == ours => {
                    if may_ask && now.duration_since(*since) >= settle {
                        self.disagree.remove(&origin);
                        ask.push(origin);
                    }
                }
                _ => {
                    self.disagree.insert(origin, (theirs, *ours, now));
                }
            }
        }
        self.resync_seen
            .retain(|o, _| view.members.iter().any(|m| origin_of(m) == *o));
        if !ask.is_empty() {
            self.last_ask = Some(now);
        }
        if self.resync_pending
            && self
                .last_resync
                .is_none_or(|at| now.duration_since(at) >= settle)
        {
            self.resync_pending = false;
            self.last_resync = Some(now);
            resync = true;
        }
        (resync, ask)
    }
}

/// A re-announcement request as gossiped: a counter (so a repeated request
/// is news), then the owners asked, as many as fit the gossip value bound
/// (the rest are asked after the next `settle`).
fn resync_request(counter: u64, owners: &[String]) -> String {
    let mut out = counter.to_string();
    for o in owners {
        if out.len() + 1 + o.len() > hubbub_cluster::MAX_APP_VALUE {
            break;
        }
        out.push(' ');
        out.push_str(o);
    }
    out
}

/// Whether a request names `owner`.
fn names(request: &str, owner: &str) -> bool {
    request.split(' ').skip(1).any(|o| o == owner)
}

/// A member's origin as the table names owners (`node/generation`).
fn origin_of(m: &hubbub_cluster::MemberView) -> String {
    format!("{}/{}", m.node, m.generation)
}

/// Into the hub, waiting out a full dispatch backlog (never dropped).
async fn publish(hub: &Hub, update: Update) {
    loop {
        match hub.publish(update.clone()) {
            Ok(_) => return,
            Err(PublishError::Overloaded) => hub.publish_capacity().await,
            Err(PublishError::ShuttingDown) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hubbub_cluster::{ClusterView, MemberView};

    use super::event::MatchType;
    use super::*;

    fn member(node: &str, generation: u64, app: &[(&str, &str)]) -> MemberView {
        MemberView {
            node: node.into(),
            generation,
            gossip_addr: String::new(),
            relay_addr: None,
            http_addr: None,
            ready: true,
            leaving: false,
            subscribers: 0,
            app: app
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            vector: BTreeMap::new(),
            link: "connected",
            reconnects: 0,
            backlog: 0,
            lag_ms: None,
        }
    }

    fn view(me: &str, members: Vec<MemberView>) -> ClusterView {
        ClusterView {
            node: me.into(),
            generation: 1,
            ready: true,
            members,
            ..ClusterView::default()
        }
    }

    fn sub(n: u32) -> Tracked {
        Tracked {
            match_type: MatchType::Exact,
            matcher: format!("https://example.com/{n}"),
            subscriber: format!("urn:uuid:{n}"),
            payload: None,
        }
    }

    fn timing() -> Timing {
        Timing {
            tick: Duration::from_millis(500),
            settle: Duration::from_secs(3),
            grace: Duration::from_secs(1),
        }
    }

    /// b/1 died holding two subscriptions; a, c and d remain.
    fn table_with_departed() -> Table {
        let mut t = Table::new(100);
        t.apply(sub(1), true, "b/1");
        t.apply(sub(2), true, "b/1");
        t.apply(sub(3), true, "c/1");
        t
    }

    #[test]
    fn the_lowest_node_ends_a_departed_owners_subscriptions_after_grace() {
        let t = table_with_departed();
        let others = || vec![member("c", 1, &[]), member("d", 1, &[])];
        let (mut w, mut ending) = (Watch::default(), HashMap::new());
        let t0 = Instant::now();
        let v = view("a", others());
        assert!(
            w.departed(&v, &t, "a/1", t0, &timing(), &mut ending)
                .is_empty(),
            "not before grace"
        );
        let ends = w.departed(
            &v,
            &t,
            "a/1",
            t0 + Duration::from_secs(1),
            &timing(),
            &mut ending,
        );
        assert_eq!(ends.len(), 2);
        assert!(
            ends.iter()
                .all(|(t, on)| !on && t.subscriber != "urn:uuid:3")
        );
        // Not again while those ends travel (`settle`), again after.
        let t1 = t0 + Duration::from_secs(2);
        assert!(
            w.departed(&v, &t, "a/1", t1, &timing(), &mut ending)
                .is_empty()
        );
        let t2 = t0 + Duration::from_secs(5);
        assert_eq!(
            w.departed(&v, &t, "a/1", t2, &timing(), &mut ending).len(),
            2
        );
    }

    #[test]
    fn another_node_ends_them_only_after_three_times_grace() {
        let t = table_with_departed();
        let v = view("c", vec![member("a", 1, &[]), member("d", 1, &[])]);
        let (mut w, mut ending) = (Watch::default(), HashMap::new());
        let t0 = Instant::now();
        assert!(
            w.departed(&v, &t, "c/1", t0, &timing(), &mut ending)
                .is_empty()
        );
        let late = t0 + Duration::from_secs(2);
        assert!(
            w.departed(&v, &t, "c/1", late, &timing(), &mut ending)
                .is_empty(),
            "a is lower and ready"
        );
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            w.departed(&v, &t, "c/1", later, &timing(), &mut ending)
                .len(),
            2
        );
        // A node that is not ready (catching up) never ends anything.
        let mut not_ready = v.clone();
        not_ready.ready = false;
        let (mut w, mut ending) = (Watch::default(), HashMap::new());
        w.departed(&not_ready, &t, "c/1", t0, &timing(), &mut ending);
        assert!(
            w.departed(&not_ready, &t, "c/1", later, &timing(), &mut ending)
                .is_empty()
        );
    }

    #[test]
    fn a_restarted_node_is_a_departed_one_for_its_former_generation() {
        let t = table_with_departed();
        // b is back as generation 2: b/1's subscriptions are ghosts.
        let v = view("a", vec![member("b", 2, &[]), member("c", 1, &[])]);
        let (mut w, mut ending) = (Watch::default(), HashMap::new());
        let t0 = Instant::now();
        w.departed(&v, &t, "a/1", t0, &timing(), &mut ending);
        let ends = w.departed(
            &v,
            &t,
            "a/1",
            t0 + Duration::from_secs(1),
            &timing(),
            &mut ending,
        );
        assert_eq!(ends.len(), 2);
        // A present owner's are never touched.
        let v = view("a", vec![member("b", 1, &[]), member("c", 1, &[])]);
        let (mut w, mut ending) = (Watch::default(), HashMap::new());
        w.departed(&v, &t, "a/1", t0, &timing(), &mut ending);
        assert!(
            w.departed(
                &v,
                &t,
                "a/1",
                t0 + Duration::from_secs(9),
                &timing(),
                &mut ending
            )
            .is_empty()
        );
    }

    #[test]
    fn owners_re_announce_when_a_member_asks_them_by_name() {
        let mut w = Watch::default();
        let t0 = Instant::now();
        let ours = BTreeMap::new();
        let settle = Duration::from_secs(3);
        let v = view("a", vec![member("b", 1, &[]), member("c", 1, &[])]);
        assert!(
            !w.gossip(&v, &ours, "a/1", t0, settle).0,
            "a member joining asks nothing"
        );
        let asking = |req: &'static str| {
            view(
                "a",
                vec![
                    member("b", 1, &[("presence_resync", req)]),
                    member("c", 1, &[]),
                ],
            )
        };
        assert!(
            w.gossip(&asking("1 c/1 a/1"), &ours, "a/1", t0, settle).0,
            "b asks us"
        );
        assert!(
            !w.gossip(&asking("1 c/1 a/1"), &ours, "a/1", t0, settle).0,
            "once"
        );
        assert!(
            !w.gossip(&asking("2 c/1"), &ours, "a/1", t0, settle).0,
            "b asks c only"
        );
        assert!(
            !w.gossip(&asking("3 a/0"), &ours, "a/1", t0, settle).0,
            "our former generation"
        );
        assert!(
            !w.gossip(&asking("4 a/1"), &ours, "a/1", t0, settle).0,
            "asked again: not within settle"
        );
        let later = |secs| t0 + Duration::from_secs(secs);
        assert!(!w.gossip(&asking("5 a/1"), &ours, "a/1", later(1), settle).0);
        assert!(
            w.gossip(&asking("5 a/1"), &ours, "a/1", later(3), settle).0,
            "then once"
        );
        assert!(!w.gossip(&asking("5 a/1"), &ours, "a/1", later(9), settle).0);
        assert_eq!(
            resync_request(7, &["a/1".into(), "b/2".into()]),
            "7 a/1 b/2"
        );
        let many: Vec<String> = (0..100).map(|i| format!("node-{i}/123456789")).collect();
        assert!(resync_request(1, &many).len() <= hubbub_cluster::MAX_APP_VALUE);
    }

    #[test]
    fn a_lasting_disagreement_with_an_owners_summary_asks_once_per_settle() {
        let mut w = Watch::default();
        let settle = Duration::from_secs(3);
        let mut theirs = Summary::default();
        theirs.add("x");
        theirs.add("y");
        let mut ours_s = Summary::default();
        ours_s.add("x");
        let ours: BTreeMap<String, Summary> = [("b/1".to_owned(), ours_s)].into();
        let enc = theirs.encode();
        let v = view("a", vec![member("b", 1, &[("presence", enc.as_str())])]);
        let t0 = Instant::now();
        let ask = |w: &mut Watch, ours: &BTreeMap<String, Summary>, v: &ClusterView, secs| {
            w.gossip(v, ours, "a/1", t0 + Duration::from_secs(secs), settle)
                .1
        };
        assert!(ask(&mut w, &ours, &v, 0).is_empty(), "maybe in flight");
        assert!(ask(&mut w, &ours, &v, 1).is_empty());
        assert_eq!(ask(&mut w, &ours, &v, 3), ["b/1"], "lasted settle: ask b");
        assert!(ask(&mut w, &ours, &v, 4).is_empty());
        assert!(ask(&mut w, &ours, &v, 5).is_empty(), "not again so soon");
        // Agreement clears it; garbage is ignored.
        let agree: BTreeMap<String, Summary> = [("b/1".to_owned(), theirs)].into();
        assert!(ask(&mut w, &agree, &v, 20).is_empty());
        let junk = view("a", vec![member("b", 1, &[("presence", "not a summary")])]);
        assert!(ask(&mut w, &ours, &junk, 30).is_empty());
        assert!(ask(&mut w, &ours, &junk, 40).is_empty());
    }

    /// The owner's own repairs, on a single node (the same code runs on each
    /// cluster node): a subscription of ours that the table lost (another
    /// node ended it, thinking us dead) is announced again; a table entry of
    /// ours without a connection is ended.
    #[tokio::test]
    async fn an_owner_restores_the_truth_about_its_own_subscriptions() {
        let metrics = crate::metrics::Metrics::new();
        let hub = Hub::start(hubbub_core::HubConfig::default(), Arc::new(metrics.clone()));
        let timing = Timing {
            settle: Duration::ZERO,
            ..timing()
        };
        let p = Arc::new(Presence::new(
            true,
            100,
            hub,
            None,
            false,
            metrics.presence.clone(),
            timing,
        ));
        let stop = CancellationToken::new();
        let held = p.announce(vec![sub(1)]);
        p.flush(&stop).await;
        let listed = |p: Arc<Presence>| async move {
            let (list, _) = p.snapshot(&[String::new()]).await;
            list.into_iter()
                .map(|e| e.tracked.subscriber)
                .collect::<Vec<_>>()
        };
        assert_eq!(listed(p.clone()).await, ["urn:uuid:1"]);

        p.apply(&sub(1).event(false, "urn:uuid:e1".into()), "b/1")
            .await;
        assert!(listed(p.clone()).await.is_empty(), "ended by another node");
        p.reconcile(&mut Watch::default()).await;
        p.flush(&stop).await;
        assert_eq!(listed(p.clone()).await, ["urn:uuid:1"], "announced again");

        p.apply(&sub(2).event(true, "urn:uuid:e2".into()), "local")
            .await;
        assert_eq!(listed(p.clone()).await.len(), 2);
        p.reconcile(&mut Watch::default()).await;
        p.flush(&stop).await;
        assert_eq!(
            listed(p.clone()).await,
            ["urn:uuid:1"],
            "ours, without a connection: ended"
        );
        let repairs = |kind: &str| metrics.presence.repairs.with_label_values(&[kind]).get();
        assert_eq!((repairs("reannounce"), repairs("end_own")), (1, 1));

        drop(held);
        p.flush(&stop).await;
        assert!(listed(p.clone()).await.is_empty(), "the connection ended");
    }
}
