//! An incremental SSE parser (the WHATWG `EventSource` rules), for hubbub's own
//! clients: the CLI's `subscribe`, the test kit and anyone embedding a client.

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

#[derive(Debug, Default)]
pub struct EventParser {
    pending: Vec<u8>,
    /// A CR ended the last line; a following LF belongs to it.
    after_cr: bool,
    last_id: Option<String>,
    event_type: Option<String>,
    data: Option<String>,
    retry: Option<u64>,
    /// The stream's reconnection time: the last valid `retry` seen, whether or
    /// not an event was dispatched with it (WHATWG: it applies at once).
    reconnection_time: Option<u64>,
}

impl EventParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// The last `retry` the stream set, in ms (what `EventSource` would wait
    /// before reconnecting).
    pub fn reconnection_time(&self) -> Option<u64> {
        self.reconnection_time
    }

    /// Feeds raw bytes (any split) and returns what they completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Item> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.pending);
                    self.line(&String::from_utf8_lossy(&line), &mut out);
                }
                _ => self.pending.push(b),
            }
        }
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<Item>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            out.push(Item::Comment(comment.to_owned()));
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                let data = self.data.get_or_insert_with(String::new);
                data.push_str(value);
                data.push('\n');
            }
            "event" => self.event_type = Some(value.to_owned()),
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                    self.reconnection_time = Some(ms);
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Item>) {
        let event_type = self.event_type.take();
        let retry = self.retry.take();
        let Some(mut data) = self.data.take() else {
            return;
        };
        data.pop();
        out.push(Item::Event(Event {
            id: self.last_id.clone(),
            event_type,
            data,
            retry,
        }));
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
}
