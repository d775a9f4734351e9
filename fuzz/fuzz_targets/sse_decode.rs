//! `EventParser` on arbitrary bytes. Besides not panicking: the items (events, comments) and the
//! reconnection time do not depend on how the stream is split into chunks (one chunk, one byte at
//! a time, and cuts chosen by the input itself all agree), and what comes out is what an
//! `EventSource` could expose: no CR in data, no CR/LF in comments, ids and event types, no NUL
//! in an id.
#![no_main]

use hubbub_proto::decode::{EventParser, Item};
use libfuzzer_sys::fuzz_target;

fn parse<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Item>, Option<u64>) {
    let mut p = EventParser::new();
    let mut items = Vec::new();
    for chunk in chunks {
        items.extend(p.feed(chunk));
    }
    (items, p.reconnection_time())
}

fuzz_target!(|stream: &[u8]| {
    let whole = parse([stream]);
    assert_eq!(whole, parse(stream.chunks(1)), "byte-at-a-time differs");
    // Cut after every byte equal to the first one (an input-controlled set of split points).
    if let Some(&cut) = stream.first() {
        assert_eq!(
            whole,
            parse(stream.split_inclusive(|b| *b == cut)),
            "cuts differ"
        );
    }
    let line_break = |s: &str| s.contains(['\r', '\n']);
    for item in &whole.0 {
        match item {
            Item::Comment(c) => assert!(!line_break(c), "{c:?}"),
            Item::Event(e) => {
                assert!(!e.data.contains('\r'), "{e:?}");
                assert!(
                    e.event_type.as_deref().is_none_or(|t| !line_break(t)),
                    "{e:?}"
                );
                let id_ok = |id: &str| !line_break(id) && !id.contains('\0');
                assert!(e.id.as_deref().is_none_or(id_ok), "{e:?}");
            }
        }
    }
});
