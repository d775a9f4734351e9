//! Incremental `text/event-stream` parser that only keeps what the bench needs: the
//! `data` of each event. Comments (heartbeats), `id`, `event` and `retry` are skipped.

/// Longest line kept across reads; anything longer is a misbehaving server.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("SSE line longer than {MAX_LINE} bytes")]
pub struct LineTooLong;

/// Parser state of one stream. Idle connections hold no heap memory: both buffers
/// stay empty (and unallocated) until a line or an event is split across reads.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Partial line carried over from the previous input.
    line: Vec<u8>,
    data: Vec<u8>,
    has_data: bool,
    /// The previous input ended in CR: a leading LF now belongs to that line end.
    skip_lf: bool,
    /// The `id` field seen last (the spec's "last event ID buffer").
    id_buf: Vec<u8>,
    /// The id of the last dispatched event (the "last event ID string"): only this is
    /// safe to resume from, since a stream may end between an `id:` line and its data.
    last_id: Vec<u8>,
}

impl SseParser {
    /// A parser for a stream resumed after `last_id` (empty: none yet).
    pub fn resuming(last_id: Vec<u8>) -> Self {
        Self {
            id_buf: last_id.clone(),
            last_id,
            ..Self::default()
        }
    }

    /// Whether a reconnect could resume this stream (an event with an id was seen).
    pub fn has_last_id(&self) -> bool {
        !self.last_id.is_empty()
    }

    /// The id to send as `Last-Event-ID` when reconnecting.
    pub fn into_last_id(self) -> Vec<u8> {
        self.last_id
    }

    /// Feeds body bytes; calls `on_event` with the data of every completed event.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        on_event: &mut impl FnMut(&[u8]),
    ) -> Result<(), LineTooLong> {
        if self.skip_lf && !input.is_empty() {
            self.skip_lf = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', input) {
            if self.line.is_empty() {
                self.line_done(&input[..i], on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[..i]);
                self.line_done(&line, on_event);
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
        if self.line.len() + input.len() > MAX_LINE {
            return Err(LineTooLong);
        }
        self.line.extend_from_slice(input);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8], on_event: &mut impl FnMut(&[u8])) {
        if line.is_empty() {
            if self.last_id != self.id_buf {
                self.last_id.clone_from(&self.id_buf);
            }
            if self.has_data && !self.data.is_empty() {
                on_event(&self.data);
            }
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        if name == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        } else if name == b"id" && !value.contains(&0) {
            self.id_buf.clear();
            self.id_buf.extend_from_slice(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(parts: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for part in parts {
            p.feed(part, &mut |d: &[u8]| {
                out.push(String::from_utf8_lossy(d).into_owned())
            })
            .unwrap();
        }
        out
    }

    fn every_split(input: &[u8]) -> Vec<String> {
        let whole = events(&[input]);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                assert_eq!(
                    events(&[&input[..a], &input[a..b], &input[b..]]),
                    whole,
                    "split {a},{b}"
                );
            }
        }
        whole
    }

    #[test]
    fn parses_events_comments_and_multiline_data() {
        let input =
            b":\n\nid: 1\ndata: hello\n\n:\nevent: x\ndata: a\ndata:b\ndata\n\nretry: 5\n\n";
        assert_eq!(every_split(input), vec!["hello", "a\nb\n"]);
    }

    #[test]
    fn remembers_the_last_event_id() {
        let mut p = SseParser::resuming(b"old".to_vec());
        p.feed(b":\n\n", &mut |_| {}).unwrap();
        assert_eq!(p.last_id, b"old");
        p.feed(
            b"id: urn:1\ndata: a\n\ndata: no id\n\nid: bad\0\n\n",
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(p.last_id, b"urn:1");
        // An event cut off after its id line is not resumed from.
        p.feed(b"id: urn:2\ndata: half", &mut |_| {}).unwrap();
        assert_eq!(p.into_last_id(), b"urn:1");
    }

    #[test]
    fn accepts_crlf_and_lone_cr() {
        assert_eq!(
            every_split(b"data: one\r\n\r\ndata: two\r\rdata: 3\n\r\n"),
            vec!["one", "two", "3"]
        );
    }

    #[test]
    fn incomplete_event_is_not_dispatched() {
        assert!(events(&[b"data: x\n"]).is_empty());
        assert!(events(&[b"data: x"]).is_empty());
    }

    #[test]
    fn idle_parser_holds_no_memory() {
        let mut p = SseParser::default();
        p.feed(b":\n:\n", &mut |_| {}).unwrap();
        assert_eq!(p.line.capacity(), 0);
        assert_eq!(p.data.capacity(), 0);
    }

    #[test]
    fn rejects_endless_lines() {
        let mut p = SseParser::default();
        let chunk = vec![b'x'; 64 * 1024];
        let r = (0..20).try_for_each(|_| p.feed(&chunk, &mut |_| {}));
        assert_eq!(r, Err(LineTooLong));
    }
}
