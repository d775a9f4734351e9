//! The documents and topics of Mercure's active subscriptions, in both
//! generations' forms (no I/O, no state).
//!
//! One *tracked subscription* is one matcher of one connection. Its canonical
//! form, the one the cluster relays and the table keeps, is the 1.0 event: a
//! private update of SSE type `mercure` whose topic is also its JSON `id`. The
//! 0.x JSON-LD event is derived from it on each node (with `compat_0x`), so
//! both generations see the same changes in the same order.

use hubbub_proto::Update;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Map, Value};

/// Where the events and the API live (the hub's path + `/subscriptions`).
pub const PREFIX: &str = "/.well-known/mercure/subscriptions";

/// The SSE `event` of every subscription event (draft-08: reserved, so a
/// subscriber can trust that the hub wrote it).
pub const EVENT_TYPE: &str = "mercure";

/// Everything but RFC 3986 unreserved characters is encoded, exactly once:
/// a `%` in a matcher becomes `%25`, so no value can pass for another.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path variable as a whole (RFC 6570 simple expansion).
pub fn encode(value: &str) -> String {
    utf8_percent_encode(value, COMPONENT).to_string()
}

/// How a subscription selects topics, by its draft-08 matcher type name.
/// `template` is hubbub's name for a 0.x subscriber's URI template (a 0.x
/// `topic=` without `{` is `exact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchType {
    Exact,
    UrlPattern,
    Template,
}

impl MatchType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::UrlPattern => "urlpattern",
            Self::Template => "template",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "exact" => Some(Self::Exact),
            "urlpattern" => Some(Self::UrlPattern),
            "template" => Some(Self::Template),
            _ => None,
        }
    }
}

/// One matcher of one connection, as the events and the API describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub match_type: MatchType,
    pub matcher: String,
    /// Hub-assigned, unique per connection (`urn:uuid:...`).
    pub subscriber: String,
    /// The token's `payload`, as compact JSON text (kept as text: it is only
    /// ever copied into documents).
    pub payload: Option<String>,
}

impl Tracked {
    /// The 1.0 topic, which is also the document's `id` and the key everywhere.
    pub fn topic(&self) -> String {
        format!(
            "{PREFIX}/{}/{}/{}",
            self.match_type.as_str(),
            encode(&self.matcher),
            encode(&self.subscriber)
        )
    }

    /// The 0.x topic: `{topic}/{subscriber}` under the same prefix.
    pub fn topic_v0(&self) -> String {
        format!(
            "{PREFIX}/{}/{}",
            encode(&self.matcher),
            encode(&self.subscriber)
        )
    }

    /// The 1.0 document (draft-08 "Subscription Events").
    pub fn document(&self, active: bool) -> Value {
        let mut doc = Map::new();
        doc.insert("id".into(), self.topic().into());
        doc.insert("type".into(), "subscription".into());
        doc.insert("match_type".into(), self.match_type.as_str().into());
        doc.insert("match".into(), self.matcher.clone().into());
        doc.insert("subscriber".into(), self.subscriber.clone().into());
        doc.insert("active".into(), active.into());
        self.insert_payload(&mut doc);
        Value::Object(doc)
    }

    /// The 0.x JSON-LD document; `context` only where it stands alone (an
    /// event or a single resource), not inside a collection.
    pub fn document_v0(&self, active: bool, context: bool) -> Value {
        let mut doc = Map::new();
        if context {
            doc.insert("@context".into(), "https://mercure.rocks/".into());
        }
        doc.insert("id".into(), self.topic_v0().into());
        doc.insert("type".into(), "Subscription".into());
        doc.insert("topic".into(), self.matcher.clone().into());
        doc.insert("subscriber".into(), self.subscriber.clone().into());
        doc.insert("active".into(), active.into());
        self.insert_payload(&mut doc);
        Value::Object(doc)
    }

    fn insert_payload(&self, doc: &mut Map<String, Value>) {
        if let Some(p) = &self.payload {
            let value = serde_json::from_str(p).unwrap_or(Value::Null);
            doc.insert("payload".into(), value);
        }
    }

    /// The canonical event: what the owner submits and every node applies.
    pub fn event(&self, active: bool, id: String) -> Update {
        Update {
            id,
            topics: vec![self.topic()],
            data: self.document(active).to_string(),
            private: true,
            event_type: Some(EVENT_TYPE.to_owned()),
            retry: None,
        }
    }

    /// Rough heap bytes held for this subscription in the table.
    pub fn heap_bytes(&self) -> usize {
        self.matcher.len() + self.subscriber.len() + self.payload.as_ref().map_or(0, String::len)
    }
}

/// The 0.x twin of a canonical event, delivered right after it with a
/// derived id (so a 0.x `Last-Event-ID` is as exact as a 1.0 one).
pub fn twin_v0(event: &Update, tracked: &Tracked, active: bool) -> Update {
    Update {
        id: format!("{}#0x", event.id),
        topics: vec![tracked.topic_v0()],
        data: tracked.document_v0(active, true).to_string(),
        private: true,
        event_type: None,
        retry: None,
    }
}

/// Whether `update` is a subscription event (only the hub can write one:
/// publishers may not use the type `mercure` nor the reserved topics).
pub fn is_event(update: &Update) -> bool {
    update.event_type.as_deref() == Some(EVENT_TYPE)
        && update.topics.first().is_some_and(|t| t.starts_with(PREFIX))
}

/// Reads a canonical event back: the subscription and whether it is active.
/// `None` for anything malformed (never from our own nodes; dropped).
pub fn parse(update: &Update) -> Option<(Tracked, bool)> {
    if !is_event(update) {
        return None;
    }
    let doc: Value = serde_json::from_str(&update.data).ok()?;
    let field = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    let tracked = Tracked {
        match_type: MatchType::parse(doc.get("match_type")?.as_str()?)?,
        matcher: field("match")?,
        subscriber: field("subscriber")?,
        payload: doc.get("payload").map(Value::to_string),
    };
    let active = doc.get("active")?.as_bool()?;
    (tracked.topic() == update.topics[0]).then_some((tracked, active))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Tracked {
        Tracked {
            match_type: MatchType::UrlPattern,
            matcher: "https://example.com/:selector".into(),
            subscriber: "urn:uuid:bb3de268-05b0-4c65-b44e-8f9acefc29d6".into(),
            payload: Some(r#"{"foo":"bar"}"#.into()),
        }
    }

    #[test]
    fn topics_encode_each_variable_exactly_once() {
        // The draft's own example.
        assert_eq!(
            sample().topic(),
            "/.well-known/mercure/subscriptions/urlpattern/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
        );
        // An already-encoded value is encoded again, never passed through.
        let mut t = sample();
        t.matcher = "https://example.com/a%20b".into();
        assert!(t.topic().contains("a%2520b"), "{}", t.topic());
        assert_eq!(encode("a-b.c_d~e/f"), "a-b.c_d~e%2Ff");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn an_event_round_trips_and_its_id_is_its_topic() {
        let t = sample();
        let e = t.event(true, "urn:uuid:1".into());
        assert!(e.private);
        assert_eq!(e.event_type.as_deref(), Some("mercure"));
        let doc: Value = serde_json::from_str(&e.data).unwrap();
        assert_eq!(doc["id"], Value::String(e.topics[0].clone()));
        assert_eq!(doc["type"], "subscription");
        assert_eq!(doc["payload"]["foo"], "bar");
        assert_eq!(parse(&e), Some((t.clone(), true)));
        assert_eq!(parse(&t.event(false, "x".into())), Some((t, false)));
    }

    #[test]
    fn a_forged_or_foreign_update_is_no_event() {
        let t = sample();
        let mut e = t.event(true, "x".into());
        e.event_type = None;
        assert_eq!(parse(&e), None);
        let mut e = t.event(true, "x".into());
        e.topics[0] = format!("{PREFIX}/exact/a/b");
        assert_eq!(parse(&e), None, "the topic must be the document's");
        let mut e = t.event(true, "x".into());
        e.data = "{".into();
        assert_eq!(parse(&e), None);
    }

    #[test]
    fn the_0x_twin_is_json_ld_on_the_0x_topic() {
        let t = sample();
        let e = t.event(false, "urn:uuid:1".into());
        let twin = twin_v0(&e, &t, false);
        assert_eq!(twin.id, "urn:uuid:1#0x");
        assert_eq!(twin.event_type, None);
        assert!(twin.private);
        assert_eq!(
            twin.topics[0],
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com%2F%3Aselector/urn%3Auuid%3Abb3de268-05b0-4c65-b44e-8f9acefc29d6"
        );
        let doc: Value = serde_json::from_str(&twin.data).unwrap();
        assert_eq!(doc["@context"], "https://mercure.rocks/");
        assert_eq!(doc["type"], "Subscription");
        assert_eq!(doc["topic"], "https://example.com/:selector");
        assert_eq!(doc["active"], false);
    }
}
