//! SSE framing. An update is encoded into its frame exactly once; the resulting
//! `Bytes` is shared (reference-counted) by every subscriber that receives it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::update::Update;

/// Written right after the response headers so `EventSource` fires `open` at once.
pub const OPEN_COMMENT: &[u8] = b":\n";

/// A comment line that keeps idle connections alive and reveals dead ones on write.
pub const HEARTBEAT: &[u8] = b":\n";

/// Encodes `update` as one SSE event: optional `event:`, optional `retry:`, `id:`,
/// one `data:` line per line of the payload (CRLF, CR and LF all split lines; blank
/// lines and leading spaces survive because every line gets `data: ` with exactly one
/// space), then the blank line that ends the event.
pub fn encode_frame(update: &Update) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame_len_hint(update));
    if let Some(ty) = &update.event_type {
        field(&mut buf, b"event: ", ty.as_bytes());
    }
    if let Some(retry) = update.retry.filter(|r| *r > 0) {
        field(&mut buf, b"retry: ", retry.to_string().as_bytes());
    }
    field(&mut buf, b"id: ", update.id.as_bytes());
    for line in data_lines(&update.data) {
        field(&mut buf, b"data: ", line.as_bytes());
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

fn field(buf: &mut BytesMut, name: &[u8], value: &[u8]) {
    buf.put_slice(name);
    buf.put_slice(value);
    buf.put_u8(b'\n');
}

fn frame_len_hint(update: &Update) -> usize {
    let lines = 1 + update
        .data
        .bytes()
        .filter(|b| *b == b'\n' || *b == b'\r')
        .count();
    update.data.len()
        + update.id.len()
        + update.event_type.as_ref().map_or(0, |t| t.len() + 8)
        + lines * 7
        + 32
}

/// Splits on CRLF, lone CR and lone LF, exactly as an SSE parser will re-join them.
/// Empty data still yields one (empty) line, so the event carries `data: `.
pub fn data_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
            None => {
                rest = None;
                Some(s)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn update(data: &str) -> Update {
        Update {
            id: "id-1".into(),
            topics: vec!["t".into()],
            data: data.into(),
            private: false,
            event_type: None,
            retry: None,
        }
    }

    fn frame(u: &Update) -> String {
        String::from_utf8(encode_frame(u).to_vec()).unwrap()
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            ("hello", "id: id-1\ndata: hello\n\n"),
            ("", "id: id-1\ndata: \n\n"),
            ("a\nb", "id: id-1\ndata: a\ndata: b\n\n"),
            ("a\r\nb\rc", "id: id-1\ndata: a\ndata: b\ndata: c\n\n"),
            ("a\n\nb", "id: id-1\ndata: a\ndata: \ndata: b\n\n"),
            ("  lead", "id: id-1\ndata:   lead\n\n"),
            ("end\n", "id: id-1\ndata: end\ndata: \n\n"),
        ];
        for (data, want) in cases {
            assert_eq!(frame(&update(data)), *want, "data {data:?}");
        }
    }

    #[test]
    fn event_and_retry_come_first() {
        let mut u = update("x");
        u.event_type = Some("ping".into());
        u.retry = Some(1500);
        assert_eq!(frame(&u), "event: ping\nretry: 1500\nid: id-1\ndata: x\n\n");
        u.retry = Some(0);
        assert_eq!(frame(&u), "event: ping\nid: id-1\ndata: x\n\n");
    }

    /// Decodes a frame the way the WHATWG EventSource parser does.
    fn decode_data(frame: &str) -> String {
        let mut data = String::new();
        for line in frame.split('\n') {
            if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                data.push('\n');
            }
        }
        data.pop();
        data
    }

    proptest! {
        #[test]
        fn data_survives_a_round_trip(data in "[a-z \r\n]{0,40}") {
            let encoded = frame(&update(&data));
            prop_assert!(encoded.ends_with("\n\n"));
            let normalized = data.replace("\r\n", "\n").replace('\r', "\n");
            prop_assert_eq!(decode_data(&encoded), normalized);
            // One event: no blank line before the end.
            prop_assert_eq!(encoded.matches("\n\n").count(), 1);
        }
    }
}
