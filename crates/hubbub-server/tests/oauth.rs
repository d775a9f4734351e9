//! Mercure 1.0 (draft-dunglas-mercure-08) access tokens over real HTTP: each
//! validation rule played as an attacker, the grants, the cookie, the RFC 6750
//! answers, and 0.x tokens still accepted next to them.

use std::time::Duration;

use hubbub_proto::token::{access_token_claims, mint_access_token, mint_with_header};
use hubbub_testkit::{
    Config, HttpResponse, KEY, SseClient, StatusCode, TestHub, client, config, publisher, send,
};
use jsonwebtoken::{Algorithm, Header};
use serde_json::{Value, json};

const TOPIC: &str = "https://example.com/books/1";
const OTHER: &str = "https://example.com/books/2";
const RESOURCE: &str = "https://hub.example/.well-known/mercure";

const ED_ISS: &str = "https://ed.example";
const ES_ISS: &str = "https://es.example";
const RS_ISS: &str = "https://rs.example";
const HS_ISS: &str = "https://hs.example";
const HS2_ISS: &str = "https://hs2.example";
const HS_SECRET: &str = "hs-issuer-secret-0123456789abcdef";
const HS2_SECRET: &str = "hs2-issuer-secret-0123456789abcdef";

const ED_PRIV: &str = include_str!("keys/ed25519.key");
const ED_PUB: &str = include_str!("keys/ed25519.pub");
const ES_PRIV: &str = include_str!("keys/es256.key");
const ES_PUB: &str = include_str!("keys/es256.pub");
const RS_PRIV: &str = include_str!("keys/rs256.key");
const RS_PUB: &str = include_str!("keys/rs256.pub");

fn oauth_config() -> Config {
    Config {
        anonymous: false,
        oauth_issuers: vec![
            format!("{ED_ISS}|EdDSA|{ED_PUB}"),
            format!("{ES_ISS}|ES256|{ES_PUB}"),
            format!("{RS_ISS}|RS256|{RS_PUB}"),
            format!("{HS_ISS}|HS256|{HS_SECRET}"),
            format!("{HS2_ISS}|HS256|{HS2_SECRET}"),
        ],
        oauth_resource: Some(RESOURCE.into()),
        ..config()
    }
}

const PUBLISH_ALL: &[(&[&str], &[&str])] = &[(&["publish"], &["*"])];

fn claims(iss: &str, grants: &[(&[&str], &[&str])]) -> Value {
    access_token_claims(iss, RESOURCE, grants, Duration::from_secs(300))
}

/// An HS256 access token of [`HS_ISS`] with these claims.
fn hs(claims: &Value) -> String {
    mint_access_token("HS256", HS_SECRET, claims).unwrap()
}

fn with_details(details: Value) -> Value {
    let mut c = claims(HS_ISS, &[]);
    c["authorization_details"] = details;
    c
}

fn detail(actions: Value, topics: Value) -> Value {
    json!({"type": "https://mercure.rocks/authorization-detail", "actions": actions, "topics": topics})
}

fn form(topic: &str) -> Vec<(&str, &str)> {
    vec![("topic", topic), ("data", "x")]
}

async fn publish(hub: &TestHub, token: &str, topic: &str) -> HttpResponse {
    hubbub_testkit::publish(&hub.url(), token, &form(topic)).await
}

#[track_caller]
fn assert_invalid_token(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge:?}"
    );
    assert!(challenge.contains("error_description=\""), "{what}");
}

#[track_caller]
fn assert_insufficient_scope(r: &HttpResponse, what: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.body);
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer ") && challenge.contains("error=\"insufficient_scope\""),
        "{what}: {challenge:?}"
    );
}

/// A JWS with any header, e.g. `alg: none`, and no valid signature.
fn unsigned(header: &Value, claims: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn tokens_of_each_allowed_algorithm_from_their_issuer_publish() {
    let hub = TestHub::start(oauth_config()).await;
    for (alg, iss, key) in [
        ("EdDSA", ED_ISS, ED_PRIV),
        ("ES256", ES_ISS, ES_PRIV),
        ("RS256", RS_ISS, RS_PRIV),
        ("HS256", HS_ISS, HS_SECRET),
    ] {
        let t = mint_access_token(alg, key, &claims(iss, PUBLISH_ALL)).unwrap();
        let r = publish(&hub, &t, TOPIC).await;
        assert_eq!(r.status, StatusCode::OK, "{alg}: {}", r.body);
    }
    // `application/at+jwt`, any case, is the same media type.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("Application/AT+JWT".into());
    let t = mint_with_header(&header, HS_SECRET, &claims(HS_ISS, PUBLISH_ALL)).unwrap();
    assert_eq!(publish(&hub, &t, TOPIC).await.status, StatusCode::OK);
    // 0.x tokens keep working on the same hub.
    assert_eq!(
        publish(&hub, &publisher(KEY), TOPIC).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_header_is_checked_typ_alg_and_key_material() {
    let hub = TestHub::start(oauth_config()).await;
    let c = claims(HS_ISS, PUBLISH_ALL);

    for typ in [None, Some("JWT"), Some("application/jwt"), Some("at+jwt2")] {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        let t = mint_with_header(&header, HS_SECRET, &c).unwrap();
        assert_invalid_token(&publish(&hub, &t, TOPIC).await, &format!("typ {typ:?}"));
    }

    let none = unsigned(&json!({"alg": "none", "typ": "at+jwt"}), &c, "");
    assert_invalid_token(&publish(&hub, &none, TOPIC).await, "alg none");

    // Algorithm confusion: the ES256 issuer's public key used as an HMAC secret.
    let confused = mint_access_token("HS256", ES_PUB, &claims(ES_ISS, PUBLISH_ALL)).unwrap();
    assert_invalid_token(
        &publish(&hub, &confused, TOPIC).await,
        "HS256 with a public key",
    );
    // A right key, but not the algorithm configured for it.
    let hs512 = mint_access_token("HS512", HS_SECRET, &c).unwrap();
    assert_invalid_token(
        &publish(&hub, &hs512, TOPIC).await,
        "HS512 for an HS256 key",
    );
    let ps256 = mint_access_token("PS256", RS_PRIV, &claims(RS_ISS, PUBLISH_ALL)).unwrap();
    assert_invalid_token(
        &publish(&hub, &ps256, TOPIC).await,
        "PS256 for an RS256 key",
    );

    // Key material in the header is refused, even when the signature is good.
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.jku = Some("https://attacker.example/jwks.json".into());
    let t = mint_with_header(&header, HS_SECRET, &c).unwrap();
    assert_invalid_token(&publish(&hub, &t, TOPIC).await, "jku");
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("at+jwt".into());
    header.x5u = Some("https://attacker.example/cert.pem".into());
    let t = mint_with_header(&header, HS_SECRET, &c).unwrap();
    assert_invalid_token(&publish(&hub, &t, TOPIC).await, "x5u");

    // A tampered signature.
    let good = hs(&c);
    let (head, sig) = good.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    let bad = format!("{head}.{flipped}{}", &sig[1..]);
    assert_invalid_token(&publish(&hub, &bad, TOPIC).await, "bad signature");
}

#[tokio::test]
async fn exp_nbf_aud_and_iss_are_enforced() {
    let hub = TestHub::start(oauth_config()).await;
    let base = claims(HS_ISS, PUBLISH_ALL);
    let now = hubbub_proto::token::unix_now();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "no exp",
            edit(&|c| drop(c.as_object_mut().unwrap().remove("exp"))),
        ),
        ("expired", edit(&|c| c["exp"] = json!(now - 60))),
        ("nbf in the future", edit(&|c| c["nbf"] = json!(now + 3600))),
        (
            "no aud",
            edit(&|c| drop(c.as_object_mut().unwrap().remove("aud"))),
        ),
        (
            "another hub's aud",
            edit(&|c| c["aud"] = json!("https://other-hub.example/.well-known/mercure")),
        ),
        (
            "aud array without us",
            edit(&|c| c["aud"] = json!(["https://a.example", "https://b.example"])),
        ),
        (
            "no iss",
            edit(&|c| drop(c.as_object_mut().unwrap().remove("iss"))),
        ),
        (
            "unknown iss",
            edit(&|c| c["iss"] = json!("https://stranger.example")),
        ),
        (
            "iss differing in case",
            edit(&|c| c["iss"] = json!("https://HS.example")),
        ),
    ];
    for (what, c) in cases {
        assert_invalid_token(&publish(&hub, &hs(&c), TOPIC).await, what);
    }
    // Signed with another trusted issuer's key: only the named issuer's keys count.
    let t = mint_access_token("HS256", HS2_SECRET, &base).unwrap();
    assert_invalid_token(
        &publish(&hub, &t, TOPIC).await,
        "iss signed by another issuer",
    );
    // The EdDSA issuer named, signed by the ES256 issuer.
    let t = mint_access_token("ES256", ES_PRIV, &claims(ED_ISS, PUBLISH_ALL)).unwrap();
    assert_invalid_token(
        &publish(&hub, &t, TOPIC).await,
        "ES256 key for the EdDSA issuer",
    );

    // An aud array containing the resource is fine; a past nbf too.
    let ok = edit(&|c| {
        c["aud"] = json!(["https://a.example", RESOURCE]);
        c["nbf"] = json!(now - 10);
    });
    assert_eq!(publish(&hub, &hs(&ok), TOPIC).await.status, StatusCode::OK);
}

#[tokio::test]
async fn one_invalid_authorization_detail_rejects_the_whole_token() {
    let hub = TestHub::start(oauth_config()).await;
    let good = detail(json!(["publish"]), json!([{"match": "*"}]));
    let bad_entries = [
        (
            "actions not an array",
            detail(json!("publish"), json!([{"match": "*"}])),
        ),
        ("empty actions", detail(json!([]), json!([{"match": "*"}]))),
        (
            "non-string action",
            detail(json!(["publish", 1]), json!([{"match": "*"}])),
        ),
        (
            "no topics",
            json!({"type": "https://mercure.rocks/authorization-detail", "actions": ["publish"]}),
        ),
        ("empty topics", detail(json!(["publish"]), json!([]))),
        (
            "topic not an object",
            detail(json!(["publish"]), json!(["*"])),
        ),
        (
            "no match",
            detail(json!(["publish"]), json!([{"match_type": "exact"}])),
        ),
        (
            "unknown match_type",
            detail(
                json!(["publish"]),
                json!([{"match": TOPIC, "match_type": "regex"}]),
            ),
        ),
        (
            "a urlpattern that does not compile",
            detail(
                json!(["publish"]),
                json!([{"match": "https://example.com/books/(?=x)", "match_type": "urlpattern"}]),
            ),
        ),
        (
            "more urlpatterns than a token may carry",
            detail(
                json!(["publish"]),
                Value::Array(
                    (0..17)
                        .map(|i| json!({"match": format!("https://example.com/{i}/:id"), "match_type": "urlpattern"}))
                        .collect(),
                ),
            ),
        ),
        (
            "payload not an object",
            json!({"type": "https://mercure.rocks/authorization-detail", "actions": ["subscribe"], "topics": [{"match": "*"}], "payload": "x"}),
        ),
        ("entry not an object", json!("publish")),
        (
            "entry without type",
            json!({"actions": ["publish"], "topics": [{"match": "*"}]}),
        ),
    ];
    for (what, bad) in bad_entries {
        let t = hs(&with_details(json!([good.clone(), bad])));
        assert_invalid_token(&publish(&hub, &t, TOPIC).await, what);
    }
    let t = hs(&with_details(json!({"type": "x"})));
    assert_invalid_token(&publish(&hub, &t, TOPIC).await, "details not an array");

    // Limits: too many details, too many matchers, too long a match.
    let many: Vec<Value> = (0..65).map(|_| good.clone()).collect();
    assert_invalid_token(
        &publish(&hub, &hs(&with_details(json!(many))), TOPIC).await,
        "65 details",
    );
    let topics: Vec<Value> = (0..1001)
        .map(|i| json!({"match": format!("urn:t:{i}")}))
        .collect();
    let t = hs(&with_details(json!([detail(
        json!(["publish"]),
        json!(topics)
    )])));
    assert_invalid_token(&publish(&hub, &t, TOPIC).await, "1001 matchers");
    let long = "x".repeat(2049);
    let t = hs(&with_details(json!([detail(
        json!(["publish"]),
        json!([{"match": long}])
    )])));
    assert_invalid_token(&publish(&hub, &t, TOPIC).await, "a 2049-byte match");
    let huge = hs(&with_details(
        json!([detail(json!(["publish"]), json!([{"match": "*"}])), {"type": "pad", "x": "y".repeat(17_000)}]),
    ));
    assert_invalid_token(&publish(&hub, &huge, TOPIC).await, "a token over 16 KiB");

    // Unknown actions are ignored; other detail types are not ours.
    let t = hs(&with_details(json!([
        detail(json!(["publish", "frobnicate"]), json!([{"match": TOPIC}])),
        {"type": "https://other.example/detail", "anything": [1, 2]},
    ])));
    assert_eq!(
        publish(&hub, &t, TOPIC).await.status,
        StatusCode::OK,
        "unknown action ignored"
    );
    let t = hs(&with_details(json!([detail(
        json!(["frobnicate"]),
        json!([{"match": "*"}])
    )])));
    assert_insufficient_scope(&publish(&hub, &t, TOPIC).await, "only an unknown action");
}

#[tokio::test]
async fn publish_grants_cover_every_topic_or_403() {
    let hub = TestHub::start(oauth_config()).await;
    let exact = hs(&claims(HS_ISS, &[(&["publish"], &[TOPIC])]));
    assert_eq!(publish(&hub, &exact, TOPIC).await.status, StatusCode::OK);
    assert_insufficient_scope(&publish(&hub, &exact, OTHER).await, "another topic");
    let both =
        hubbub_testkit::publish(&hub.url(), &exact, &[("topic", TOPIC), ("topic", OTHER)]).await;
    assert_insufficient_scope(&both, "an alternate topic not granted");
    // An exact grant is exact: a template-looking match is no template.
    let template = hs(&claims(
        HS_ISS,
        &[(&["publish"], &["https://example.com/books/{id}"])],
    ));
    assert_insufficient_scope(&publish(&hub, &template, TOPIC).await, "exact `{id}`");
    // A urlpattern grant covers the topics its pattern matches.
    let pattern = hs(&with_details(json!([detail(
        json!(["publish"]),
        json!([{"match": "https://example.com/books/:id(1)", "match_type": "urlpattern"}]),
    )])));
    assert_eq!(publish(&hub, &pattern, TOPIC).await.status, StatusCode::OK);
    assert_insufficient_scope(&publish(&hub, &pattern, OTHER).await, "outside the pattern");
    // Subscribe grants do not allow publishing; no details grant nothing.
    let sub = hs(&claims(HS_ISS, &[(&["subscribe"], &["*"])]));
    assert_insufficient_scope(&publish(&hub, &sub, TOPIC).await, "subscribe grant");
    assert_insufficient_scope(
        &publish(&hub, &hs(&claims(HS_ISS, &[])), TOPIC).await,
        "no details",
    );
}

#[tokio::test]
async fn subscribe_grants_decide_private_updates() {
    let hub = TestHub::start(Config {
        anonymous: true,
        ..oauth_config()
    })
    .await;
    let granted = hs(&claims(HS_ISS, &[(&["subscribe"], &[TOPIC])]));
    let publish_only = hs(&claims(HS_ISS, &[(&["publish"], &["*"])]));
    let mut with_grant = hub.subscribe_with(&[TOPIC, OTHER], &granted).await;
    assert_eq!(with_grant.status, StatusCode::OK);
    let mut without = hub.subscribe_with(&[TOPIC], &publish_only).await;
    assert_eq!(without.status, StatusCode::OK);

    let pubtok = hs(&claims(HS_ISS, PUBLISH_ALL));
    for topic in [OTHER, TOPIC] {
        let r = hubbub_testkit::publish(
            &hub.url(),
            &pubtok,
            &[("topic", topic), ("data", topic), ("private", "on")],
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    let event = with_grant.expect_event().await;
    assert_eq!(
        event.data, TOPIC,
        "the private update on the granted topic only"
    );
    with_grant.expect_no_event(Duration::from_millis(300)).await;
    without.expect_no_event(Duration::from_millis(300)).await;

    // An invalid token is refused even on an anonymous hub.
    let expired = {
        let mut c = claims(HS_ISS, &[(&["subscribe"], &["*"])]);
        c["exp"] = json!(1000);
        hs(&c)
    };
    let r = SseClient::connect(
        client()
            .get(hub.subscribe_url(&[TOPIC]))
            .bearer_auth(&expired),
    )
    .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("invalid_token")
    );
}

#[tokio::test]
async fn the_1_0_cookie_and_no_query_parameter() {
    let hub = TestHub::start(oauth_config()).await;
    let sub = hs(&claims(HS_ISS, &[(&["subscribe"], &["*"])]));
    let cookie = |name: &str, t: &str| {
        SseClient::connect(
            client()
                .get(hub.subscribe_url(&[TOPIC]))
                .header("cookie", format!("{name}={t}")),
        )
    };
    assert_eq!(
        cookie("__Secure-mercure_access_token", &sub).await.status,
        StatusCode::OK
    );
    assert_eq!(cookie("other", &sub).await.status, StatusCode::UNAUTHORIZED);
    // The Authorization header wins over a (bad) cookie.
    let r = SseClient::connect(
        client()
            .get(hub.subscribe_url(&[TOPIC]))
            .bearer_auth(&sub)
            .header("cookie", "__Secure-mercure_access_token=garbage"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);

    // 1.0 tokens never in the query string; 0.x ones still may.
    let url = format!("{}&authorization={sub}", hub.subscribe_url(&[TOPIC]));
    let r = send(client().get(url)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.header("www-authenticate")
            .unwrap_or_default()
            .contains("error=\"invalid_request\"")
    );
    let old = hubbub_testkit::subscriber(KEY, &["*"]);
    let url = format!("{}&authorization={old}", hub.subscribe_url(&[TOPIC]));
    assert_eq!(SseClient::get(&url).await.status, StatusCode::OK);

    let custom = TestHub::start(Config {
        oauth_cookie_name: "hub_a_token".into(),
        ..oauth_config()
    })
    .await;
    let r = SseClient::connect(
        client()
            .get(custom.subscribe_url(&[TOPIC]))
            .header("cookie", format!("hub_a_token={sub}")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "a configured cookie name");
}

#[tokio::test]
async fn rfc_6750_answers() {
    let hub = TestHub::start(oauth_config()).await;
    let none = publish(&hub, "", TOPIC).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let challenge = none.header("www-authenticate").unwrap_or_default();
    assert!(challenge.starts_with("Bearer"), "{challenge:?}");
    assert!(
        !challenge.contains("error="),
        "no token: a bare challenge, {challenge:?}"
    );
    let r = SseClient::get(&hub.subscribe_url(&[TOPIC])).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        !r.header("www-authenticate")
            .unwrap_or_default()
            .contains("error=")
    );

    assert_invalid_token(&publish(&hub, "garbage", TOPIC).await, "garbage");
    // A 0.x token with a bad signature is an invalid token too.
    assert_invalid_token(
        &publish(&hub, &publisher("wrong-key"), TOPIC).await,
        "0.x bad signature",
    );

    let sub = hs(&claims(HS_ISS, &[(&["subscribe"], &["*"])]));
    assert_insufficient_scope(
        &publish(&hub, &sub, TOPIC).await,
        "subscribe-only token publishing",
    );

    let two = send(
        client()
            .post(hub.url())
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                format!("Bearer {}", hs(&claims(HS_ISS, PUBLISH_ALL))),
            )
            .header("authorization", "Bearer other")
            .body(hubbub_testkit::encode_form(&form(TOPIC))),
    )
    .await;
    assert_eq!(two.status, StatusCode::BAD_REQUEST, "{}", two.body);
    assert!(
        two.header("www-authenticate")
            .unwrap_or_default()
            .contains("error=\"invalid_request\"")
    );
}

#[tokio::test]
async fn the_resource_defaults_to_the_hub_url_on_the_request_origin() {
    let hub = TestHub::start(Config {
        oauth_resource: None,
        ..oauth_config()
    })
    .await;
    let own = format!("http://{}/.well-known/mercure", hub.addr);
    let mut c = claims(HS_ISS, PUBLISH_ALL);
    c["aud"] = json!(own);
    assert_eq!(publish(&hub, &hs(&c), TOPIC).await.status, StatusCode::OK);
    c["aud"] = json!(RESOURCE);
    assert_invalid_token(&publish(&hub, &hs(&c), TOPIC).await, "another origin");
}

#[test]
fn bad_issuer_entries_are_configuration_errors() {
    for entry in [
        "https://i|none|secret",
        "https://i|HS256",
        "https://i|ES256|not a pem",
        "|HS256|secret",
    ] {
        let c = Config {
            oauth_issuers: vec![entry.into()],
            ..config()
        };
        assert!(c.settings().is_err(), "{entry}");
    }
}

const METADATA: &str = "/.well-known/oauth-protected-resource/.well-known/mercure";

#[tokio::test]
async fn discovery_metadata_and_challenges_point_to_it() {
    let hub = TestHub::start(oauth_config()).await;
    let r = hubbub_testkit::get(&format!("{}{METADATA}", hub.base_url())).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let doc: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(doc["resource"], RESOURCE);
    let mut servers = vec![ED_ISS, ES_ISS, HS_ISS, HS2_ISS, RS_ISS];
    servers.sort_unstable();
    assert_eq!(doc["authorization_servers"], json!(servers));
    assert_eq!(
        doc["authorization_details_types_supported"],
        json!(["https://mercure.rocks/authorization-detail"])
    );
    assert_eq!(doc["bearer_methods_supported"], json!(["header"]));
    assert_eq!(doc["mercure_cookie"], "__Secure-mercure_access_token");
    assert_eq!(
        doc["mercure_matcher_types_supported"],
        json!(["exact", "urlpattern"])
    );

    let url = format!("resource_metadata=\"https://hub.example{METADATA}\"");
    let none = publish(&hub, "", TOPIC).await;
    assert!(
        none.header("www-authenticate")
            .unwrap_or_default()
            .contains(&url),
        "{none:?}"
    );
    let bad = publish(&hub, "garbage", TOPIC).await;
    assert!(
        bad.header("www-authenticate")
            .unwrap_or_default()
            .contains(&url)
    );
    let sub = SseClient::get(&hub.subscribe_url(&[TOPIC])).await;
    assert!(
        sub.header("www-authenticate")
            .unwrap_or_default()
            .contains(&url)
    );

    // Derived from the request's origin when not configured.
    let derived = TestHub::start(Config {
        oauth_resource: None,
        ..oauth_config()
    })
    .await;
    let r = hubbub_testkit::get(&format!("{}{METADATA}", derived.base_url())).await;
    let doc: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        doc["resource"],
        format!("http://{}/.well-known/mercure", derived.addr)
    );

    // A 0.x-only hub publishes no metadata and its challenges stay as they were.
    let old = TestHub::start(config()).await;
    let r = hubbub_testkit::get(&format!("{}{METADATA}", old.base_url())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let none = publish(&old, "", TOPIC).await;
    assert_eq!(
        none.header("www-authenticate"),
        Some("Bearer realm=\"mercure\"")
    );
}
