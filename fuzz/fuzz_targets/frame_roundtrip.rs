//! `encode_frame` of an `Update` built from the input, decoded back by `EventParser`. Input lines:
//! id, event type (empty: none; a leading `!` is dropped, so `!` is the empty type), retry (empty
//! or not a number: none), then the data (the rest, line breaks included).
//!
//! Besides not panicking: a valid update (one `Update::validate` accepts) comes back as exactly one
//! event with the same id, event type, retry (0 means unset) and data (CRLF and lone CR read back as
//! LF, as the frame's doc says), also when it follows another frame and is cut at any point.
#![no_main]

use hubbub_proto::decode::{Event, EventParser, Item};
use hubbub_proto::{Update, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut lines = text.splitn(4, '\n');
    let mut next = || lines.next().unwrap_or("");
    let (id, event_type, retry, data) = (next(), next(), next(), next());
    let update = Update {
        id: id.to_owned(),
        topics: vec!["https://example.com/books/1".into()],
        data: data.to_owned(),
        private: false,
        event_type: (!event_type.is_empty()).then(|| {
            event_type
                .strip_prefix('!')
                .unwrap_or(event_type)
                .to_owned()
        }),
        retry: retry.parse().ok(),
    };
    let frame = encode_frame(&update);
    if update.validate(hubbub_proto::update::MAX_TOPICS).is_err() {
        return; // the hub refuses these before encoding; encoding them must only not panic
    }
    let want = Item::Event(Event {
        id: Some(update.id.clone()),
        event_type: update.event_type.clone(),
        data: update.data.replace("\r\n", "\n").replace('\r', "\n"),
        retry: update.retry.filter(|r| *r > 0),
    });
    let mut p = EventParser::new();
    assert_eq!(p.feed(&frame), [want.clone()], "frame {frame:?}");
    // The same frame again, cut at an input-chosen point: each frame stands on its own.
    let cut = input
        .iter()
        .fold(0, |a: usize, b| a.wrapping_mul(31) ^ usize::from(*b));
    let cut = cut % (frame.len() + 1);
    let mut items = p.feed(&frame[..cut]);
    items.extend(p.feed(&frame[cut..]));
    assert_eq!(items, [want], "second frame {frame:?} cut at {cut}");
});
