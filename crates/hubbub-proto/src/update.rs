//! The update: what a publisher sends and every matching subscriber receives.

use thiserror::Error;

use crate::text::forbidden_char;

/// Most topics (canonical + alternates) one update may carry, as in the reference hub.
pub const MAX_TOPICS: usize = 1000;

/// Topics under this path are reserved for the hub's own subscription events.
pub const RESERVED_PREFIX: &str = "/.well-known/mercure";

/// A URL with the hub's path, the base topics are resolved against for the
/// reserved-namespace test. Its authority does not matter: the rule holds
/// "regardless of scheme or authority" (draft-08, Publication).
const HUB_BASE: &str = "https://hub.invalid/.well-known/mercure";

/// One published update, as the publisher described it. Immutable once accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// The SSE `id`: the publisher's own, or one the hub generated.
    pub id: String,
    /// The first topic is canonical, the rest are alternates; any of them may match.
    pub topics: Vec<String>,
    /// Payload, sent as-is (multi-line data is split into several `data:` lines).
    pub data: String,
    /// Private updates reach only subscribers whose `mercure.subscribe` claim covers a topic.
    pub private: bool,
    /// SSE `event:` line.
    pub event_type: Option<String>,
    /// SSE `retry:` line; `None` (or 0 when parsed from a form) means unset.
    pub retry: Option<u64>,
}

/// Why an update was refused. The server maps each kind to an HTTP status.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UpdateError {
    #[error("missing \"topic\" parameter")]
    NoTopic,
    #[error("too many topics: {count} (the limit is {max})")]
    TooManyTopics { count: usize, max: usize },
    #[error("invalid \"id\": {0}")]
    InvalidId(&'static str),
    #[error("invalid \"type\": {0}")]
    InvalidType(&'static str),
    #[error("invalid topic {0:?}: control and format characters are not allowed")]
    InvalidTopic(String),
    #[error("topic {0:?} is reserved by the hub")]
    ReservedTopic(String),
    #[error("the topic \"*\" is reserved: it is the wildcard every subscriber's \"*\" matches")]
    WildcardTopic,
}

impl Update {
    /// Checks the rules every update must follow before it is stamped and stored.
    /// `max_topics` is the configured limit (at most [`MAX_TOPICS`] makes sense).
    pub fn validate(&self, max_topics: usize) -> Result<(), UpdateError> {
        validate_topics(&self.topics, max_topics)?;
        if self.topics.iter().any(|t| t == "*") {
            return Err(UpdateError::WildcardTopic);
        }
        if let Some(t) = self.topics.iter().find(|t| is_reserved_topic(t)) {
            return Err(UpdateError::ReservedTopic(t.clone()));
        }
        if let Some(t) = self.topics.iter().find(|t| forbidden_char(t).is_some()) {
            return Err(UpdateError::InvalidTopic(t.clone()));
        }
        validate_id(&self.id)?;
        if let Some(ty) = &self.event_type {
            if forbidden_char(ty).is_some() {
                return Err(UpdateError::InvalidType(
                    "control and format characters are not allowed",
                ));
            }
            // Reserved for the hub's own subscription events, so that a
            // publisher cannot forge one (draft-08, Publication).
            if ty == "mercure" {
                return Err(UpdateError::InvalidType(
                    "\"mercure\" is reserved for the hub's subscription events",
                ));
            }
        }
        Ok(())
    }
}

/// Topic count rules shared by publish (topics) and subscribe (selectors).
pub fn validate_topics(topics: &[String], max: usize) -> Result<(), UpdateError> {
    if topics.is_empty() {
        return Err(UpdateError::NoTopic);
    }
    if topics.len() > max {
        return Err(UpdateError::TooManyTopics {
            count: topics.len(),
            max,
        });
    }
    Ok(())
}

/// An id becomes an SSE `id:` line and a resume cursor (also in the
/// `Last-Event-ID` header), so it must stay on one line of visible text;
/// `#`-prefixed ids and `earliest` are reserved by the spec.
pub fn validate_id(id: &str) -> Result<(), UpdateError> {
    if id.is_empty() {
        return Err(UpdateError::InvalidId("must not be empty"));
    }
    if id.starts_with('#') {
        return Err(UpdateError::InvalidId("must not start with '#'"));
    }
    if id == "earliest" {
        return Err(UpdateError::InvalidId(
            "\"earliest\" is reserved (it asks for the whole history)",
        ));
    }
    if forbidden_char(id).is_some() {
        return Err(UpdateError::InvalidId(
            "control and format characters are not allowed",
        ));
    }
    Ok(())
}

/// True when the topic addresses the hub's reserved namespace (draft-08,
/// Publication and "Reserved Hub Namespace"): resolved against the hub's URL
/// with the WHATWG URL parser (dot segments removed, `%2e` included), its
/// path, with percent-encoded unreserved characters decoded, is the hub path
/// or lies under it, whatever the scheme or authority. A raw prefix test would
/// let `https://hub.example/.well-known/mercure/...`, `/.well-known/%6Dercure/...`
/// or `/x/../.well-known/mercure/...` forge the hub's subscription events. A
/// topic that is no URL reference names no hub path and is not reserved.
pub fn is_reserved_topic(topic: &str) -> bool {
    static BASE: std::sync::LazyLock<url::Url> =
        std::sync::LazyLock::new(|| url::Url::parse(HUB_BASE).expect("a valid base URL"));
    let Ok(url) = url::Url::options().base_url(Some(&BASE)).parse(topic) else {
        return false;
    };
    let path = decode_unreserved(url.path());
    path == RESERVED_PREFIX
        || path
            .strip_prefix(RESERVED_PREFIX)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Decodes `%XX` escapes of RFC 3986 unreserved characters (ALPHA, DIGIT,
/// `-`, `.`, `_`, `~`), leaving every other escape as it is: the
/// normalization under which `%6D` and `m` are the same path.
fn decode_unreserved(path: &str) -> std::borrow::Cow<'_, str> {
    if !path.contains('%') {
        return path.into();
    }
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(c) = path
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .filter(|c| c.is_ascii_alphanumeric() || b"-._~".contains(c))
        {
            out.push(c as char);
            i += 3;
            continue;
        }
        // Not a decodable escape: copy one (possibly multi-byte) character.
        let ch = path[i..].chars().next().expect("i is a char boundary");
        out.push(ch);
        i += ch.len_utf8();
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(id: &str) -> Update {
        Update {
            id: id.into(),
            topics: vec!["https://example.com/books/1".into()],
            data: String::new(),
            private: false,
            event_type: None,
            retry: None,
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(update("urn:uuid:1").validate(10).is_ok());
        assert!(update("#x").validate(10).is_err());
        assert!(update("a\nb").validate(10).is_err());
        assert!(update("a\rb").validate(10).is_err());
        assert!(update("a\0b").validate(10).is_err());
        assert!(update("").validate(10).is_err());
        // Draft-08: `earliest` is reserved; no control or format characters.
        assert!(update("earliest").validate(10).is_err());
        assert!(update("earliestx").validate(10).is_ok());
        assert!(update("a\tb").validate(10).is_err());
        assert!(update("a\u{200B}b").validate(10).is_err());
        assert!(update("a\u{85}b").validate(10).is_err());
        assert!(update("caf\u{e9}").validate(10).is_ok());
    }

    #[test]
    fn topics_are_one_line_of_visible_text() {
        let mut u = update("x");
        u.topics = vec!["https://h/a\u{202E}b".into()];
        assert!(matches!(u.validate(2), Err(UpdateError::InvalidTopic(_))));
        u.topics = vec!["https://h/\u{e9}t\u{e9}".into()];
        assert_eq!(u.validate(2), Ok(()));
    }

    #[test]
    fn topics_are_counted() {
        let mut u = update("x");
        u.topics.clear();
        assert_eq!(u.validate(2), Err(UpdateError::NoTopic));
        u.topics = vec!["a".into(), "b".into(), "c".into()];
        assert_eq!(
            u.validate(2),
            Err(UpdateError::TooManyTopics { count: 3, max: 2 })
        );
    }

    #[test]
    fn type_must_be_visible_text_and_not_mercure() {
        let mut u = update("x");
        for bad in ["a\nb", "a\u{7F}", "\u{2066}x", "mercure"] {
            u.event_type = Some(bad.into());
            assert!(
                matches!(u.validate(2), Err(UpdateError::InvalidType(_))),
                "{bad:?}"
            );
        }
        for good in ["Mercure", "mercures", "book.updated"] {
            u.event_type = Some(good.into());
            assert_eq!(u.validate(2), Ok(()), "{good:?}");
        }
    }

    #[test]
    fn reserved_topics() {
        for t in [
            "/.well-known/mercure",
            "/.well-known/mercure/subscriptions/x",
            "https://h.example/.well-known/mercure/subscriptions",
            // Any scheme or authority, relative references, normalization.
            "http://other.example:8080/.well-known/mercure/x",
            "urn-like:/.well-known/mercure/x",
            "//h.example/.well-known/mercure/x",
            "mercure/subscriptions/x",
            "mercure",
            "./mercure",
            "/.well-known/%6Dercure/x",
            "/.well-known/%6dercure",
            "/%2Ewell-known/mercure/x",
            "/a/../.well-known/mercure/x",
            "/.well-known/mercure/../mercure/x",
            "/.well-known/x/%2e%2e/mercure/y",
            "https://h.example/.well-known/mercure?q=1",
            "https://h.example/.well-known/mercure#f",
        ] {
            assert!(is_reserved_topic(t), "{t}");
        }
        for t in [
            "/.well-known/mercurex",
            "/.well-known/mercure%2Fx",
            "https://h/books",
            "urn:a:/.well-known/mercure",
            "books/1",
            "/.well-known/mercure/../x",
            "http://[::1",
        ] {
            assert!(!is_reserved_topic(t), "{t}");
        }
    }

    #[test]
    fn the_wildcard_is_no_topic() {
        let mut u = update("a");
        u.topics = vec!["https://example.com/a".into(), "*".into()];
        assert_eq!(u.validate(10), Err(UpdateError::WildcardTopic));
        u.topics = vec!["*/x".into()];
        assert_eq!(u.validate(10), Ok(()));
    }

    #[test]
    fn unreserved_escapes_only_are_decoded() {
        assert_eq!(decode_unreserved("/%41%2d%7E%2F%zz%4"), "/A-~%2F%zz%4");
        assert_eq!(decode_unreserved("/é%6D"), "/ém");
    }
}
