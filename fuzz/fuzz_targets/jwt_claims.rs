//! JWT claim handling as the server does it: `Auth::verify` (HS256, a fixed test key) of a token
//! whose header and payload JSON come from the input (`header\npayload`, or the payload alone with
//! `{"alg":"HS256"}`), signed with that key; then `claim_selectors` on both claims. Besides not
//! panicking: an accepted token's header says `"alg":"HS256"` (no algorithm confusion, no `none`),
//! its claims are the payload's own, it has not expired, a token signed with another key or with a
//! changed signature is refused, and `claim_selectors` accepts a list iff every selector parses and
//! there are at most 1000.
#![no_main]

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hubbub_proto::Selector;
use hubbub_server::auth::{Auth, Role, claim_selectors};
use jsonwebtoken::{Algorithm, EncodingKey, crypto::sign};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";

fn token(header: &[u8], payload: &[u8], key: &str) -> String {
    let message = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let key = EncodingKey::from_secret(key.as_bytes()).expect("a non-empty key");
    let signature = sign(message.as_bytes(), &key, Algorithm::HS256).expect("HMAC signs anything");
    format!("{message}.{signature}")
}

fuzz_target!(|input: &[u8]| {
    let (header, payload) = match input.iter().position(|b| *b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], input),
    };
    // Publisher: the test key; subscriber: another key.
    let auth = Auth::new((KEY, "HS256"), ("another key", "HS256"), false, "c".into()).unwrap();
    let good = token(header, payload, KEY);
    assert!(
        auth.verify(Role::Subscriber, &good).is_err(),
        "accepted with the wrong key"
    );
    let dot = good.rfind('.').unwrap();
    let flipped = if good.as_bytes()[dot + 1] == b'A' {
        'B'
    } else {
        'A'
    };
    let forged = format!("{}{flipped}{}", &good[..=dot], &good[dot + 2..]);
    assert!(
        auth.verify(Role::Publisher, &forged).is_err(),
        "changed signature accepted"
    );

    let Ok(claims) = auth.verify(Role::Publisher, &good) else {
        return;
    };
    // Read the header as jsonwebtoken does (unknown members skipped unchecked), keeping only `alg`.
    #[derive(serde::Deserialize)]
    struct Header {
        alg: String,
    }
    let alg = serde_json::from_slice::<Header>(header)
        .expect("accepted header")
        .alg;
    assert_eq!(
        alg,
        "HS256",
        "accepted header {:?}",
        String::from_utf8_lossy(header)
    );
    // The claims are the payload's own (when it also parses as a `Value`, which unlike skipping an
    // unknown member checks its UTF-8 and number ranges).
    if let Ok(payload) = serde_json::from_slice::<Value>(payload) {
        let list = |name: &str| -> Option<Vec<String>> {
            serde_json::from_value(payload["mercure"].get(name)?.clone()).ok()?
        };
        assert_eq!(claims.mercure.publish, list("publish"), "{payload}");
        assert_eq!(claims.mercure.subscribe, list("subscribe"), "{payload}");
    }
    if let Some(exp) = claims.exp {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert!(
            exp + 2 >= now.as_secs(),
            "expired token accepted: exp {exp}"
        );
    }
    for (name, list) in [
        ("publish", &claims.mercure.publish),
        ("subscribe", &claims.mercure.subscribe),
    ] {
        let Some(list) = list else { continue };
        let want = list.len() <= 1000 && list.iter().all(|s| Selector::parse(s).is_ok());
        assert_eq!(
            claim_selectors(list, name, Selector::parse).is_ok(),
            want,
            "{name}: {list:?}"
        );
    }
});
