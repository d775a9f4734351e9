//! URI templates compiled by `UriTemplate::parse` and matched against an expansion of the same
//! template made by an independent RFC 6570 expander (`hubbub_fuzz::rfc6570`: the template on the
//! first line, values on the next ones), then against the whole input as a topic.
//!
//! Besides not panicking: every template that parses matches its own expansion (no false
//! negative, for every operator, `:N` prefix, explode, list and associative array). Sizes are
//! capped (template 1 KiB, topic 8 KiB) so libFuzzer's `-timeout` flags a match that is not
//! linear-ish.
#![no_main]

use hubbub_fuzz::rfc6570::expand;
use hubbub_proto::UriTemplate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let mut lines = text.split('\n');
    let source = lines.next().unwrap_or("");
    if source.len() > 1024 || text.len() > 8192 {
        return;
    }
    let Ok(template) = UriTemplate::parse(source) else {
        return;
    };
    let expansion = expand(source, &mut lines);
    assert!(
        template.matches(&expansion),
        "{source:?} does not match its expansion {expansion:?}"
    );
    let _ = template.matches(text);
});
