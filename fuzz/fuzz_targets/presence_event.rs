//! Subscription events as every node reads them (`hubbub_server::presence::event::parse`) from
//! arbitrary updates: never a panic; whatever parses is a subscription whose own event parses back
//! to it (same subscription, same `active`), whose topic is the update's and encodes each variable
//! exactly once (decoding the three path segments gives back the match type, matcher and subscriber).
#![no_main]

use hubbub_proto::Update;
use hubbub_server::presence::event::{EVENT_TYPE, PREFIX, parse};
use libfuzzer_sys::fuzz_target;

// Input: a flag byte (odd: SSE type `mercure`), then the topic after the prefix, a NUL, the data.
fuzz_target!(|raw: &[u8]| {
    let Some((&flag, rest)) = raw.split_first() else {
        return;
    };
    let typed = flag % 2 == 1;
    let (topic, data) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let (topic, data) = (
        String::from_utf8_lossy(topic).into_owned(),
        String::from_utf8_lossy(data).into_owned(),
    );
    let update = Update {
        id: "urn:uuid:fuzz".into(),
        topics: vec![format!("{PREFIX}{topic}")],
        data,
        private: true,
        event_type: typed.then(|| EVENT_TYPE.to_owned()),
        retry: None,
    };
    let Some((tracked, active)) = parse(&update) else {
        return;
    };
    assert!(typed, "only `mercure` events parse");
    assert_eq!(tracked.topic(), update.topics[0]);
    let again = tracked.event(active, "urn:uuid:again".into());
    assert_eq!(parse(&again), Some((tracked.clone(), active)));
    let segments: Vec<String> = again.topics[0][PREFIX.len() + 1..]
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .expect("UTF-8")
                .into_owned()
        })
        .collect();
    assert_eq!(
        segments,
        [
            tracked.match_type.as_str().to_owned(),
            tracked.matcher.clone(),
            tracked.subscriber.clone()
        ]
    );
});
