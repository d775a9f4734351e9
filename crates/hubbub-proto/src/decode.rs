//! An incremental SSE parser (the WHATWG `EventSource` rules), for hubbub's own
//! clients: the CLI's `subscribe`, the test kit, the bench and anyone embedding a client.
//!
//! Two layers over one state machine: [`SseParser`] hands out borrowed pieces
//! ([`Raw`]) through a callback and allocates nothing per event, which is what a
//! load generator holding 20k streams needs; [`EventParser`] wraps it and returns
//! owned [`Item`]s, which is what a CLI or a test wants.

/// One dispatched event. `id` is the last event id in force when it was
/// dispatched, as `EventSource.lastEventId` would report it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub event_type: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

/// What the stream carried: events, and comments (the open line, heartbeats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Event(Event),
    Comment(String),
}

/// A piece of the stream as [`SseParser`] reports it, borrowed from its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raw<'a> {
    Event(RawEvent<'a>),
    /// A comment line, without its `:`.
    Comment(&'a [u8]),
}

/// An event's fields as bytes; see [`Event`] for their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawEvent<'a> {
    pub id: Option<&'a [u8]>,
    pub event_type: Option<&'a [u8]>,
    pub data: &'a [u8],
    pub retry: Option<u64>,
}

/// A line longer than the parser's limit: a misbehaving (or hostile) server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("SSE line longer than {0} bytes")]
pub struct LineTooLong(pub usize);

/// Parser state of one stream. Idle streams hold no heap memory: the buffers stay
/// empty (and unallocated) until a line or an event is split across reads.
#[derive(Debug)]
pub struct SseParser {
    max_line: usize,
    /// Partial line carried over from the previous input.
    line: Vec<u8>,
    /// The data buffer, without the trailing LF the spec appends per line.
    data: Vec<u8>,
    has_data: bool,
    event_type: Vec<u8>,
    has_event_type: bool,
    retry: Option<u64>,
    reconnection_time: Option<u64>,
    /// The previous input ended in CR: a leading LF now belongs to that line end.
    skip_lf: bool,
    /// The `id` field seen last (the spec's "last event ID buffer").
    id_buf: Vec<u8>,
    has_id: bool,
    /// The id of the last dispatched event (the "last event ID string"): only this is
    /// safe to resume from, since a stream may end between an `id:` line and its data.
    last_id: Vec<u8>,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::with_max_line(usize::MAX)
    }
}

impl SseParser {
    /// A parser that refuses lines longer than `max_line` bytes (the only memory a
    /// server can make a client hold without dispatching anything).
    pub fn with_max_line(max_line: usize) -> Self {
        Self {
            max_line,
            line: Vec::new(),
            data: Vec::new(),
            has_data: false,
            event_type: Vec::new(),
            has_event_type: false,
            retry: None,
            reconnection_time: None,
            skip_lf: false,
            id_buf: Vec::new(),
            has_id: false,
            last_id: Vec::new(),
        }
    }

    /// Continues a stream resumed after `last_id` (empty: none yet): events without
    /// an `id` line report it as theirs, as `EventSource` does.
    pub fn resuming(mut self, last_id: Vec<u8>) -> Self {
        self.has_id = !last_id.is_empty();
        self.id_buf.clone_from(&last_id);
        self.last_id = last_id;
        self
    }

    /// The id of the last dispatched event (empty if none): what to send as
    /// `Last-Event-ID` when reconnecting.
    pub fn last_id(&self) -> &[u8] {
        &self.last_id
    }

    pub fn into_last_id(self) -> Vec<u8> {
        self.last_id
    }

    /// The last `retry` the stream set, in ms (what `EventSource` would wait
    /// before reconnecting); it applies at once, dispatched or not.
    pub fn reconnection_time(&self) -> Option<u64> {
        self.reconnection_time
    }

    /// Feeds raw bytes (any split); calls `on` for every event and comment they complete.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on: &mut impl FnMut(Raw<'_>),
    ) -> Result<(), LineTooLong> {
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', input) {
            if self.line.is_empty() {
                self.line_done(&input[..i], on);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..i]);
                self.line_done(&line, on);
                line.clear();
                self.line = line;
            }
            let cr = input[i] == b'\r';
            input = &input[i + 1..];
            if cr {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        if self.line.len().saturating_add(input.len()) > self.max_line {
            return Err(LineTooLong(self.max_line));
        }
        self.line.extend_from_slice(input);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], on: &mut impl FnMut(Raw<'_>)) {
        if line.is_empty() {
            self.dispatch(on);
            return;
        }
        if line[0] == b':' {
            on(Raw::Comment(&line[1..]));
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
                self.has_event_type = true;
            }
            b"id" if !value.contains(&0) => {
                self.id_buf.clear();
                self.id_buf.extend_from_slice(value);
                self.has_id = true;
            }
            b"retry" => {
                if let Some(ms) = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()) {
                    self.retry = Some(ms);
                    self.reconnection_time = Some(ms);
                }
            }
            _ => {}
        }
    }

    /// The blank line: the last event ID string takes the buffer's value, and an
    /// event is dispatched if any `data` line came (WHATWG: none, nothing to fire).
    fn dispatch(&mut self, on: &mut impl FnMut(Raw<'_>)) {
        if self.last_id != self.id_buf {
            self.last_id.clone_from(&self.id_buf);
        }
        if self.has_data {
            on(Raw::Event(RawEvent {
                id: self.has_id.then_some(&self.last_id[..]),
                event_type: self.has_event_type.then_some(&self.event_type[..]),
                data: &self.data,
                retry: self.retry,
            }));
        }
        self.data.clear();
        self.has_data = false;
        self.event_type.clear();
        self.has_event_type = false;
        self.retry = None;
    }
}

/// [`SseParser`] returning owned [`Item`]s (no line limit: a client of a trusted hub).
#[derive(Debug, Default)]
pub struct EventParser {
    raw: SseParser,
}

impl EventParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `retry` the stream set, in ms (what `EventSource` would wait
    /// before reconnecting).
    pub fn reconnection_time(&self) -> Option<u64> {
        self.raw.reconnection_time()
    }

    /// Feeds raw bytes (any split) and returns what they completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // No limit is set, so no line is ever too long.
        let _ = self.raw.feed(chunk, &mut |raw| {
            out.push(match raw {
                Raw::Comment(c) => Item::Comment(text(c)),
                Raw::Event(e) => Item::Event(Event {
                    id: e.id.map(text),
                    event_type: e.event_type.map(text),
                    data: text(e.data),
                    retry: e.retry,
                }),
            })
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Update, encode_frame};

    #[test]
    fn parses_what_we_encode_in_any_split() {
        let update = Update {
            id: "i-1".into(),
            topics: vec!["t".into()],
            data: "a\n\n  b".into(),
            private: false,
            event_type: Some("ty".into()),
            retry: Some(7),
        };
        let mut wire = b":\n".to_vec();
        wire.extend_from_slice(&encode_frame(&update));
        for split in 0..wire.len() {
            let mut p = EventParser::new();
            let mut items = p.feed(&wire[..split]);
            items.extend(p.feed(&wire[split..]));
            assert_eq!(
                items,
                [
                    Item::Comment(String::new()),
                    Item::Event(Event {
                        id: Some("i-1".into()),
                        event_type: Some("ty".into()),
                        data: "a\n\n  b".into(),
                        retry: Some(7)
                    })
                ]
            );
        }
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        let mut p = EventParser::new();
        let items = p.feed(b"id: 1\r\ndata: x\r\n\r\nid: 2\rdata: y\r\r");
        let ids: Vec<_> = items
            .iter()
            .map(|i| match i {
                Item::Event(e) => (e.id.clone().unwrap(), e.data.clone()),
                Item::Comment(_) => unreachable!(),
            })
            .collect();
        assert_eq!(ids, [("1".into(), "x".into()), ("2".into(), "y".into())]);
    }

    /// The data of every event `parts` complete, fed in that split.
    fn datas(parts: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for part in parts {
            p.feed(part, &mut |raw| {
                if let Raw::Event(e) = raw {
                    out.push(String::from_utf8_lossy(e.data).into_owned())
                }
            })
            .unwrap();
        }
        out
    }

    fn every_split(input: &[u8]) -> Vec<String> {
        let whole = datas(&[input]);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                assert_eq!(
                    datas(&[&input[..a], &input[a..b], &input[b..]]),
                    whole,
                    "split {a},{b}"
                );
            }
        }
        whole
    }

    #[test]
    fn parses_events_comments_and_multiline_data_in_any_split() {
        let input =
            b":\n\nid: 1\ndata: hello\n\n:\nevent: x\ndata: a\ndata:b\ndata\n\nretry: 5\n\ndata:\n\n";
        assert_eq!(every_split(input), vec!["hello", "a\nb\n", ""]);
        assert_eq!(
            every_split(b"data: one\r\n\r\ndata: two\r\rdata: 3\n\r\n"),
            vec!["one", "two", "3"]
        );
    }

    #[test]
    fn remembers_the_last_dispatched_event_id() {
        let mut p = SseParser::default().resuming(b"old".to_vec());
        let mut ids = Vec::new();
        p.feed(b":\n\ndata: x\n\n", &mut |raw| {
            if let Raw::Event(e) = raw {
                ids.push(e.id.map(<[u8]>::to_vec));
            }
        })
        .unwrap();
        assert_eq!(ids, [Some(b"old".to_vec())]);
        assert_eq!(p.last_id(), b"old");
        p.feed(
            b"id: urn:1\ndata: a\n\ndata: no id\n\nid: bad\0\n\n",
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(p.last_id(), b"urn:1");
        // An event cut off after its id line is not resumed from.
        p.feed(b"id: urn:2\ndata: half", &mut |_| {}).unwrap();
        assert_eq!(p.into_last_id(), b"urn:1");
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        assert!(datas(&[b"data: x\n"]).is_empty());
        assert!(datas(&[b"data: x"]).is_empty());
    }

    #[test]
    fn idle_parser_holds_no_memory() {
        let mut p = SseParser::default();
        let mut comments = 0;
        p.feed(b":\n:hb\n", &mut |raw| {
            comments += usize::from(matches!(raw, Raw::Comment(_)))
        })
        .unwrap();
        assert_eq!(comments, 2);
        assert_eq!(p.line.capacity(), 0);
        assert_eq!(p.data.capacity(), 0);
    }

    #[test]
    fn rejects_endless_lines_past_the_limit() {
        let mut p = SseParser::with_max_line(1 << 20);
        let chunk = vec![b'x'; 64 * 1024];
        let r = (0..20).try_for_each(|_| p.feed(&chunk, &mut |_| {}));
        assert_eq!(r, Err(LineTooLong(1 << 20)));
    }

    #[test]
    fn event_fields_reset_between_events_but_retry_sticks() {
        let mut p = EventParser::new();
        let items = p.feed(b"event: a\nretry: 30\ndata: 1\n\ndata: 2\n\nretry: x\n\n");
        let events: Vec<_> = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Event(e) => Some((e.event_type, e.retry)),
                Item::Comment(_) => None,
            })
            .collect();
        assert_eq!(events, [(Some("a".into()), Some(30)), (None, None)]);
        assert_eq!(p.reconnection_time(), Some(30));
    }
}
