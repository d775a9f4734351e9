//! Writes the seed corpora under `fuzz/corpus/<target>/` (committed; rerun after changing a format):
//! `cargo run --manifest-path fuzz/Cargo.toml --example seeds`. SSE streams and relay frames are
//! produced by hubbub's own encoders; selectors and templates come from the README and the tests.

use std::path::Path;
use std::sync::Arc;

use hubbub_cluster::wire::Msg;
use hubbub_cluster::{Origin, Preamble, Stamp, Stamped};
use hubbub_proto::{OPEN_COMMENT, Update, encode_frame};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn update(id: &str, data: &str, event_type: Option<&str>, retry: Option<u64>) -> Update {
    Update {
        id: id.into(),
        topics: vec!["https://example.com/books/1".into()],
        data: data.into(),
        private: false,
        event_type: event_type.map(Into::into),
        retry,
    }
}

fn main() {
    // sse_decode: what hubbub sends, then what other servers may send.
    let dune = update(
        "urn:uuid:0192f7a0-7c1e-7a3b-9d2e-1f0a2b3c4d5e",
        r#"{"title":"Dune"}"#,
        None,
        None,
    );
    let multi = update("i-2", "a\n\n  b\r\nc", Some("book"), Some(1500));
    let mut stream = OPEN_COMMENT.to_vec();
    stream.extend_from_slice(&encode_frame(&dune));
    write("sse_decode", "hub-open-and-one-event", &stream);
    stream.extend_from_slice(b":\n");
    stream.extend_from_slice(&encode_frame(&multi));
    stream.extend_from_slice(b"retry: 1200\n\n");
    write("sse_decode", "hub-heartbeat-multiline-retry", &stream);
    write(
        "sse_decode",
        "crlf",
        b"id: 1\r\ndata: x\r\n\r\nid: 2\r\ndata: y\r\n\r\n",
    );
    write("sse_decode", "cr-only", b"event: e\rid: 2\rdata: y\r\r:c\r");
    write(
        "sse_decode",
        "odd-fields",
        b"data\ndata:no-space\nid: has\0nul\nretry: 12x\nretry:7\nunknown: f\n:comment\n\nid\ndata: tail-without-blank-line",
    );

    // frame_roundtrip: id, type (empty: none; `!x`: "x"), retry, data lines.
    write(
        "frame_roundtrip",
        "readme",
        b"urn:uuid:1\n\n\n{\"title\":\"Dune\"}",
    );
    write(
        "frame_roundtrip",
        "all-fields",
        b"i-1\nbook\n1500\nline1\r\nline2\rline3\n\n  indented",
    );
    write("frame_roundtrip", "empty-type-zero-retry", b"x\n!\n0\n");
    write(
        "frame_roundtrip",
        "field-lookalikes",
        b" id: x\n!event:\n\ndata: d\n:c\nid: y\n",
    );

    // selector: the selector, then the topic.
    for (name, s) in [
        ("any", "*\nhttps://example.com/books/1"),
        (
            "exact",
            "https://example.com/books/1\nhttps://example.com/books/1",
        ),
        (
            "readme-template",
            "https://example.com/books/{id}\nhttps://example.com/books/1",
        ),
        (
            "query",
            "https://example.com/users/{user}/books{?sort}\nhttps://example.com/users/kevin/books?sort=asc",
        ),
        (
            "reserved",
            "https://example.com/{+path}\nhttps://example.com/a/b/c?d=e#f",
        ),
        (
            "unclosed",
            "https://example.com/books/{id\nhttps://example.com/books/1",
        ),
        (
            "path-explode-prefix",
            "{/list*,path:4}\n/red/green/blue/%2Ffoo",
        ),
        (
            "long",
            &format!(
                "{{a}}{{b}}{{c}}{{d}}{{e}}{{f}}{{g}}{{h}}{{+i}}{{/j*}}{{?k,l*}}x\n{}x",
                "a".repeat(300)
            ),
        ),
    ] {
        write("selector", name, s.as_bytes());
    }

    // template: the template, then one value per variable (`!` undefined, `[` list, `<` map).
    for (name, s) in [
        ("readme", "https://example.com/books/{id}\n1"),
        (
            "query",
            "https://example.com/users/{user}/books{?sort,page}\nkevin\nasc\n!",
        ),
        ("reserved-prefix", "{+path:6}/here\n/foo/bar"),
        ("label-list", "X{.list*}\n[red\tgreen\tblue"),
        ("query-map", "{?keys*}\n<semi=;\tdot=.\tcomma=,"),
        ("path-params", "{;v,empty,who}\n6\n\nfred"),
        ("path-encoded", "{/who,dub}\nfred\nme/too"),
        ("continuation", "?fixed=yes{&x,y,empty}\n1024\n768\n"),
        ("fragment-map", "{#keys*}\n<semi=;\tdot=.\tcomma=,"),
        // Found by this target: `:N` counts `%XX` triplets, not code points (see rfc6570.rs).
        ("prefix-utf8", "{t:6}\n/\u{493}/\0}/"),
    ] {
        write("template", name, s.as_bytes());
    }

    // form: publish bodies (README, reference-hub clients, refusals).
    for (name, s) in [
        (
            "readme",
            "topic=https://example.com/books/1&data=%7B%22title%22%3A%22Dune%22%7D",
        ),
        (
            "all-fields",
            "topic=https%3A%2F%2Fexample.com%2Fbooks%2F1&topic=https%3A%2F%2Fexample.com%2Fbooks&\
             data=a%0D%0Ab&private=on&id=urn%3Auuid%3A1&type=book&retry=1500",
        ),
        ("retry-zero", "topic=t&retry=0&data=+spaces+"),
        (
            "reserved",
            "topic=https%3A%2F%2Fh%2F.well-known%2Fmercure%2Fsubscriptions&data=x",
        ),
        ("bad-id", "topic=t&id=%23x"),
        ("bad-retry", "topic=t&retry=-1"),
        ("no-topic", "data=x&unknown=1"),
        ("newline-topic", "topic=a%0Ab"),
    ] {
        write("form", name, s.as_bytes());
    }

    // request_head: the first byte picks read sizes, then what a client sends.
    for (name, s) in [
        (
            "subscribe",
            "\x1bGET /.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nAccept: text/event-stream\r\nLast-Event-ID: urn:uuid:1\r\n\r\n",
        ),
        (
            "bare-lf",
            "\x00GET /.well-known/mercure?topic=t HTTP/1.0\nHost: h\n\n",
        ),
        (
            "publish-with-body",
            "\x7fPOST /.well-known/mercure HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\ntopic=t",
        ),
        (
            "pipelined",
            "\x55GET /healthz HTTP/1.1\r\n\r\nGET /.well-known/mercure HTTP/1.1\r\n\r\n",
        ),
    ] {
        write("request_head", name, s.as_bytes());
    }

    // jwt_claims: `header\npayload` JSON (or the payload alone), signed by the target.
    for (name, s) in [
        (
            "readme",
            r#"{"mercure":{"publish":["*"],"subscribe":["*"]}}"#,
        ),
        (
            "selectors",
            r#"{"mercure":{"publish":["https://example.com/books/{id}"],"subscribe":["https://example.com/users/{user}/books{?sort}","https://example.com/books/1"],"payload":{"user":"kevin"}}}"#,
        ),
        (
            "bad-selector",
            r#"{"mercure":{"publish":["https://a/{id"]}}"#,
        ),
        ("expired", r#"{"mercure":{"publish":["*"]},"exp":1000}"#),
        (
            "future-nbf",
            r#"{"mercure":{"publish":["*"]},"nbf":99999999999}"#,
        ),
        (
            "alg-none",
            "{\"alg\":\"none\"}\n{\"mercure\":{\"publish\":[\"*\"]}}",
        ),
        (
            "alg-hs384",
            "{\"alg\":\"HS384\",\"typ\":\"JWT\"}\n{\"mercure\":{\"publish\":[\"*\"]}}",
        ),
        ("no-mercure", r#"{"sub":"x"}"#),
    ] {
        write("jwt_claims", name, s.as_bytes());
    }

    // presence_event: a flag byte (odd: type `mercure`), the topic after the prefix, NUL, the data:
    // events as the hub writes them.
    let sub = |match_type, matcher: &str, subscriber: &str, payload: Option<&str>| {
        hubbub_server::presence::event::Tracked {
            match_type,
            matcher: matcher.into(),
            subscriber: subscriber.into(),
            payload: payload.map(str::to_owned),
        }
    };
    use hubbub_server::presence::event::{MatchType, PREFIX};
    for (name, flag, tracked, active) in [
        (
            "active",
            1u8,
            sub(MatchType::UrlPattern, "https://example.com/:selector", "urn:uuid:bb3de268", Some(r#"{"foo":"bar"}"#)),
            true,
        ),
        ("inactive-percent", 1, sub(MatchType::Exact, "a%b", "urn:uuid:1", None), false),
        ("untyped", 0, sub(MatchType::Template, "https://e.com/{id}", "urn:uuid:2", None), true),
    ] {
        let event = tracked.event(active, "urn:uuid:seed".into());
        let mut raw = vec![flag];
        raw.extend_from_slice(event.topics[0][PREFIX.len()..].as_bytes());
        raw.push(0);
        raw.extend_from_slice(event.data.as_bytes());
        write("presence_event", name, &raw);
    }

    // relay_msg: every message as `Msg::encode` writes it (what one length-delimited frame holds).
    let origin = Origin::new("hubbub-1", 1_730_000_000_123);
    let stamped = Stamped {
        stamp: Stamp {
            hlc: 42 << 16,
            origin: origin.clone(),
            seq: 3,
        },
        update: Update {
            private: true,
            ..multi
        },
    };
    for (name, msg) in [
        ("update", Msg::Update(Arc::new(stamped))),
        (
            "update-readme",
            Msg::Update(Arc::new(Stamped {
                stamp: Stamp {
                    hlc: 1,
                    origin: origin.clone(),
                    seq: 1,
                },
                update: dune,
            })),
        ),
        ("watermark", Msg::Watermark(u64::MAX)),
        (
            "pull",
            Msg::Pull {
                origin: origin.clone(),
                from: 2,
                to: 9,
            },
        ),
        (
            "pull-end",
            Msg::PullEnd {
                origin: origin.clone(),
                from: 2,
                first: 4,
            },
        ),
        ("ack", Msg::Ack { origin, hwm: 12 }),
    ] {
        write("relay_msg", name, &msg.encode());
    }

    // relay_preamble: the clear-text first frame of a link.
    let preamble = Preamble {
        cluster: "hubbub".into(),
        dialer: Origin::new("hubbub-1", 1_730_000_000_123),
        listener: Origin::new("hubbub-2", 1_730_000_000_456),
    };
    write("relay_preamble", "compose", &preamble.encode());
    let empty = Preamble {
        cluster: String::new(),
        dialer: Origin::new("", 0),
        listener: Origin::new("n\u{e9}", u64::MAX),
    };
    write("relay_preamble", "empty-names", &empty.encode());
}
