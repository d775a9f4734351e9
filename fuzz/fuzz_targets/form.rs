//! The publish form parser (`hubbub_server::fuzzing::parse_form`) on arbitrary bodies. Besides not
//! panicking: an accepted update passes `Update::validate` and holds exactly the form's fields
//! (every `topic` in order, the last `data`/`id`/`type`, `private` if present, a generated
//! `urn:uuid:` id otherwise, retry 0 as unset); encoded back as a form it parses to the same
//! update, none of whose topics is `*` or in the hub's reserved namespace; a refusal is a 400, or
//! a 413 for more than `max` topics only.
#![no_main]

use hubbub_proto::update::{MAX_TOPICS, is_reserved_topic};
use hubbub_server::fuzzing::parse_form;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let max = 10;
    let update = match parse_form(body, max) {
        Ok(update) => update,
        Err((413, message)) => {
            let topics = form_urlencoded::parse(body).filter(|(k, _)| k == "topic");
            assert!(topics.count() > max, "413: {message}");
            return;
        }
        Err((status, message)) => return assert_eq!(status, 400, "{message}"),
    };
    assert!(update.validate(max.min(MAX_TOPICS)).is_ok(), "{update:?}");
    assert!(
        update.topics.iter().all(|t| t != "*" && !is_reserved_topic(t)),
        "{update:?}"
    );
    let last = |name: &str| {
        form_urlencoded::parse(body)
            .filter(|(k, _)| k == name)
            .last()
    };
    let topics: Vec<String> = form_urlencoded::parse(body)
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(update.topics, topics);
    assert_eq!(
        update.data,
        last("data")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    );
    assert_eq!(update.event_type, last("type").map(|(_, v)| v.into_owned()));
    assert_eq!(update.private, last("private").is_some());
    match last("id") {
        Some((_, id)) => assert_eq!(update.id, id),
        None => assert!(update.id.starts_with("urn:uuid:"), "{}", update.id),
    }
    assert_ne!(update.retry, Some(0));

    let mut form = form_urlencoded::Serializer::new(String::new());
    for t in &update.topics {
        form.append_pair("topic", t);
    }
    form.append_pair("data", &update.data)
        .append_pair("id", &update.id);
    if let Some(t) = &update.event_type {
        form.append_pair("type", t);
    }
    if let Some(r) = update.retry {
        form.append_pair("retry", &r.to_string());
    }
    if update.private {
        form.append_pair("private", "on");
    }
    let form = form.finish();
    assert_eq!(
        parse_form(form.as_bytes(), max).as_ref(),
        Ok(&update),
        "re-encoded: {form}"
    );
});
