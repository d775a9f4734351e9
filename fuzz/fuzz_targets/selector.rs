//! `Selector::parse` on the input's first line, then `matches` against the rest as a topic
//! (selector capped at 1 KiB, topic at 8 KiB, as `-max_len` allows; libFuzzer's `-timeout` catches
//! a match that is not linear-ish). Besides not panicking: a parsed selector echoes its source,
//! always matches its own text, `*` is `Any`, a selector without `{` matches exactly that topic
//! and nothing else, a template selector agrees with `UriTemplate`, and matching is repeatable.
#![no_main]

use hubbub_proto::{Selector, UriTemplate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(input) = std::str::from_utf8(input) else {
        return;
    };
    let (selector, topic) = input.split_once('\n').unwrap_or((input, input));
    if selector.len() > 1024 || topic.len() > 8192 {
        return;
    }
    let Ok(parsed) = Selector::parse(selector) else {
        assert!(
            selector.contains('{'),
            "only a template can fail: {selector:?}"
        );
        return;
    };
    assert_eq!(parsed.as_str(), selector);
    assert!(
        parsed.matches(selector),
        "{selector:?} does not match itself"
    );
    let matched = parsed.matches(topic);
    assert_eq!(matched, parsed.matches(topic), "not repeatable");
    match &parsed {
        Selector::Any => assert_eq!(selector, "*"),
        Selector::Exact(s) => {
            assert!(!selector.contains('{') && selector != "*");
            assert_eq!(matched, s == topic, "{selector:?} ~ {topic:?}");
        }
        Selector::Template(t) => {
            let direct = UriTemplate::parse(selector).expect("parsed once already");
            assert_eq!(matched, topic == selector || direct.matches(topic));
            assert_eq!(t.matches(topic), direct.matches(topic));
        }
        Selector::UrlPattern(_) => panic!("`parse` never makes a URL Pattern: {selector:?}"),
    }
});
