//! `hubbub publish` and `hubbub subscribe`: small clients for trying a hub from a
//! terminal (they work against any Mercure hub).

use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hubbub_proto::decode::{EventParser, Item};
use hubbub_server::DEV_JWT_KEY;

use crate::cli::{HubArgs, Protocol, PublishArgs, SubscribeArgs};

/// How long a token the CLI mints lasts (a subscription may stay open a while).
const CLI_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A HS256 token with the given `mercure` claim (no expiry: a dev tool's token).
pub fn mint(key: &str, mercure: serde_json::Value) -> anyhow::Result<String> {
    Ok(hubbub_proto::token::mint_mercure(key, mercure, None)?)
}

/// A HS256 Mercure 1.0 access token from `issuer` for the hub(s) named by
/// `audiences`, granting `(actions, topic matches)`.
pub fn mint_access_token(
    issuer: &str,
    key: &str,
    audiences: &[String],
    grants: &[(&[&str], &[&str])],
    valid_for: Duration,
) -> anyhow::Result<String> {
    let mut claims = hubbub_proto::token::access_token_claims(issuer, "", grants, valid_for);
    claims["aud"] = serde_json::json!(audiences);
    claims["sub"] = serde_json::json!("urn:hubbub:cli");
    Ok(hubbub_proto::token::mint_access_token(
        "HS256", key, &claims,
    )?)
}

/// The hub's default resource identifier, as a 1.0 token's `aud` must name
/// it: the hub URL without query or fragment (the hub derives it from the
/// `Host` header, which reqwest writes from this URL).
fn resource_of(hub: &str) -> anyhow::Result<String> {
    let mut url = reqwest::Url::parse(hub).with_context(|| format!("bad hub URL {hub:?}"))?;
    url.set_query(None);
    url.set_fragment(None);
    Ok(url.to_string())
}

/// `--token` as given, else one minted for `action` on every topic, in the
/// form of the chosen protocol generation.
fn token_for(to: &HubArgs, action: &str) -> anyhow::Result<String> {
    if let Some(token) = &to.token {
        return Ok(token.clone());
    }
    let key = to.jwt_key.as_deref().unwrap_or(DEV_JWT_KEY);
    match to.protocol {
        Protocol::Legacy => mint(key, serde_json::json!({ action: ["*"] })),
        Protocol::V1 => {
            let audiences = if to.audience.is_empty() {
                vec![resource_of(&to.hub)?]
            } else {
                to.audience.clone()
            };
            let grants: &[(&[&str], &[&str])] = &[(&[action], &["*"])];
            mint_access_token(&to.issuer, key, &audiences, grants, CLI_TOKEN_LIFETIME)
        }
    }
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let hub = &args.to.hub;
    let token = token_for(&args.to, "publish")?;
    let mut form: Vec<(&str, &str)> = args.topic.iter().map(|t| ("topic", t.as_str())).collect();
    form.push(("data", &args.data));
    if let Some(id) = &args.id {
        form.push(("id", id));
    }
    if let Some(ty) = &args.event_type {
        form.push(("type", ty));
    }
    if args.private {
        form.push(("private", "on"));
    }
    let response = reqwest::Client::new()
        .post(hub)
        .bearer_auth(token)
        .form(&form)
        .send()
        .await
        .with_context(|| format!("cannot reach {hub}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("the hub answered {status}: {}", body.trim());
    }
    println!("{body}");
    Ok(())
}

/// The subscribe query: 1.0 matchers and `last_event_id`, or 0.x `topic`s (the
/// 0.x resume point goes in the `Last-Event-ID` header, which both accept).
fn subscribe_query(args: &SubscribeArgs) -> anyhow::Result<Vec<(&'static str, &str)>> {
    let mut query = Vec::new();
    match args.to.protocol {
        Protocol::V1 => {
            if !args.topic.is_empty() {
                bail!(
                    "--topic is the Mercure 0.x form: use --match / --match-urlpattern, or --protocol 0.x"
                );
            }
            query.extend(args.match_exact.iter().map(|m| ("match", m.as_str())));
            let patterns = args.match_urlpattern.iter();
            query.extend(patterns.map(|p| ("match_urlpattern", p.as_str())));
            if let Some(id) = &args.last_event_id {
                query.push(("last_event_id", id.as_str()));
            }
        }
        Protocol::Legacy => {
            if !args.match_exact.is_empty() || !args.match_urlpattern.is_empty() {
                bail!(
                    "--match and --match-urlpattern are Mercure 1.0: with --protocol 0.x, use --topic"
                );
            }
            query.extend(args.topic.iter().map(|t| ("topic", t.as_str())));
        }
    }
    Ok(query)
}

pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    if args.presence {
        return presence(args).await;
    }
    let query = subscribe_query(&args)?;
    let mut request = reqwest::Client::new()
        .get(&args.to.hub)
        .query(&query)
        .header("accept", "text/event-stream");
    if let (Protocol::Legacy, Some(id)) = (args.to.protocol, &args.last_event_id) {
        request = request.header("last-event-id", id);
    }
    if !args.anonymous {
        request = request.bearer_auth(token_for(&args.to, "subscribe")?);
    }
    let response = send_ok(request, &args.to.hub).await?;
    if let Some(id) = response
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
    {
        eprintln!("resuming after {id}");
    }
    let mut parser = EventParser::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        for item in parser.feed(&chunk.context("the stream broke")?) {
            if let Item::Event(e) = item {
                print_event(&e, args.json);
            }
        }
    }
    eprintln!("the hub ended the stream");
    Ok(())
}

/// Sends `request` to `url`; an answer other than 2xx is an error quoting its body.
async fn send_ok(request: reqwest::RequestBuilder, url: &str) -> anyhow::Result<reqwest::Response> {
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("{url} answered {status}: {}", body.trim());
    }
    Ok(response)
}

fn print_event(e: &hubbub_proto::decode::Event, json: bool) {
    if json {
        let line = serde_json::json!({ "id": e.id, "type": e.event_type, "data": e.data });
        println!("{line}");
    } else {
        let ty = e
            .event_type
            .as_deref()
            .map(|t| format!(" ({t})"))
            .unwrap_or_default();
        println!("[{}]{ty} {}", e.id.as_deref().unwrap_or("-"), e.data);
    }
}

/// One active subscription, from either generation's document: 1.0
/// (`"type": "subscription"`, `match_type` and `match`) or 0.x JSON-LD
/// (`"type": "Subscription"`, `topic`, shown with the match type `topic`).
#[derive(Debug, Clone, PartialEq)]
struct Presence {
    id: String,
    subscriber: String,
    match_type: String,
    matcher: String,
    payload: Option<serde_json::Value>,
    active: bool,
    /// The document as the hub sent it (what `--json` prints).
    doc: serde_json::Value,
}

impl Presence {
    fn parse(doc: &serde_json::Value, protocol: Protocol) -> Option<Self> {
        let text = |key: &str| doc.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        let (kind, match_type, matcher) = match protocol {
            Protocol::V1 => ("subscription", text("match_type")?, text("match")?),
            Protocol::Legacy => ("Subscription", "topic".to_owned(), text("topic")?),
        };
        if text("type")? != kind {
            return None;
        }
        Some(Self {
            id: text("id")?,
            subscriber: text("subscriber")?,
            match_type,
            matcher,
            payload: doc.get("payload").filter(|p| !p.is_null()).cloned(),
            active: doc.get("active").and_then(|v| v.as_bool()).unwrap_or(true),
            doc: doc.clone(),
        })
    }

    /// `subscriber match_type match [payload]`.
    fn line(&self) -> String {
        let mut line = format!("{} {} {}", self.subscriber, self.match_type, self.matcher);
        if let Some(payload) = &self.payload {
            line.push(' ');
            line.push_str(&payload.to_string());
        }
        line
    }
}

/// What an event did to the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Added,
    Updated,
    Removed,
}

/// The active subscriptions, in arrival order, kept by `id`.
#[derive(Debug, Default)]
struct PresenceList(Vec<Presence>);

impl PresenceList {
    /// Applies a subscription document: active adds (or replaces by `id`),
    /// inactive removes. `None` when the list is unchanged.
    fn apply(&mut self, p: Presence) -> Option<(Change, Presence)> {
        let at = self.0.iter().position(|q| q.id == p.id);
        match (p.active, at) {
            (true, None) => {
                self.0.push(p.clone());
                Some((Change::Added, p))
            }
            (true, Some(i)) if self.0[i] != p => {
                self.0[i] = p.clone();
                Some((Change::Updated, p))
            }
            (false, Some(i)) => {
                self.0.remove(i);
                Some((Change::Removed, p))
            }
            _ => None,
        }
    }
}

/// How `--presence` prints a subscription: `+`/`-` lines (none for the
/// initial list), or JSON lines `{"change": .., "subscription": doc}`.
fn presence_line(change: Option<Change>, p: &Presence, json: bool) -> String {
    if json {
        let change = match change {
            None => "present",
            Some(Change::Added) => "added",
            Some(Change::Updated) => "updated",
            Some(Change::Removed) => "removed",
        };
        return serde_json::json!({ "change": change, "subscription": p.doc }).to_string();
    }
    match change {
        None => p.line(),
        Some(Change::Removed) => format!("- {}", p.line()),
        Some(_) => format!("+ {}", p.line()),
    }
}

/// The reconciliation cursor of a subscription API answer: the body's
/// `lastEventID`, else the `last-event-id` of the `rel="mercure"` Link, else the ETag.
fn presence_cursor(
    headers: &reqwest::header::HeaderMap,
    body: &serde_json::Value,
) -> Option<String> {
    if let Some(id) = body.get("lastEventID").and_then(|v| v.as_str()) {
        return Some(id.to_owned());
    }
    let links = headers
        .get_all("link")
        .iter()
        .filter_map(|v| v.to_str().ok());
    for link in links.flat_map(|v| v.split(',')) {
        if !link.contains("rel=\"mercure\"") {
            continue;
        }
        let Some((_, rest)) = link.split_once("last-event-id=\"") else {
            continue;
        };
        if let Some((id, _)) = rest.split_once('"') {
            return Some(id.to_owned());
        }
    }
    let etag = headers.get("etag")?.to_str().ok()?;
    Some(etag.trim_start_matches("W/").trim_matches('"').to_owned())
}

/// The subscription API's collection URL and the selector of the subscription
/// events (1.0: a URL pattern; 0.x: the URI template of the 0.x events), both
/// under the hub URL's path.
fn presence_urls(hub: &str, protocol: Protocol) -> anyhow::Result<(reqwest::Url, String)> {
    let mut url = reqwest::Url::parse(hub).with_context(|| format!("bad hub URL {hub:?}"))?;
    url.set_query(None);
    url.set_fragment(None);
    let base = format!("{}/subscriptions", url.path().trim_end_matches('/'));
    let selector = match protocol {
        Protocol::V1 => format!("{base}/*"),
        Protocol::Legacy => format!("{base}/{{topic}}/{{subscriber}}"),
    };
    url.set_path(&base);
    Ok((url, selector))
}

/// `subscribe --presence`: the subscription API's list, then its changes as
/// subscription events from the list's cursor on.
async fn presence(args: SubscribeArgs) -> anyhow::Result<()> {
    let protocol = args.to.protocol;
    let token = token_for(&args.to, "subscribe")?;
    let (collection, selector) = presence_urls(&args.to.hub, protocol)?;
    let client = reqwest::Client::new();
    let request = client
        .get(collection.clone())
        .bearer_auth(&token)
        .header("accept", "application/json");
    let response = send_ok(request, collection.as_str()).await?;
    let headers = response.headers().clone();
    let body = response.bytes().await.context("the answer broke")?;
    let body: serde_json::Value = serde_json::from_slice(&body)
        .with_context(|| format!("{collection} did not answer JSON"))?;
    let cursor = presence_cursor(&headers, &body)
        .with_context(|| format!("{collection} gave no last-event-id cursor"))?;
    let docs = body.get("subscriptions").and_then(|s| s.as_array());
    let mut list = PresenceList::default();
    for p in docs.into_iter().flatten() {
        if let Some(p) = Presence::parse(p, protocol) {
            list.apply(p);
        }
    }
    eprintln!(
        "{} active subscription(s); following changes after {cursor}",
        list.0.len()
    );
    for p in &list.0 {
        println!("{}", presence_line(None, p, args.json));
    }

    let query: [(&str, &str); 2] = match protocol {
        Protocol::V1 => [("match_urlpattern", &selector), ("last_event_id", &cursor)],
        Protocol::Legacy => [("topic", &selector), ("lastEventID", &cursor)],
    };
    let request = client
        .get(&args.to.hub)
        .query(&query)
        .header("accept", "text/event-stream")
        .bearer_auth(&token);
    let response = send_ok(request, &args.to.hub).await?;
    let mut parser = EventParser::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        for item in parser.feed(&chunk.context("the stream broke")?) {
            let Item::Event(e) = item else { continue };
            // 1.0 subscription events carry the reserved type `mercure`; the
            // 0.x ones none (the 1.0 pattern also matches the 0.x twins).
            let wanted = match protocol {
                Protocol::V1 => e.event_type.as_deref() == Some("mercure"),
                Protocol::Legacy => e.event_type.as_deref().is_none_or(|t| t == "message"),
            };
            let doc = serde_json::from_str(&e.data).ok().filter(|_| wanted);
            let Some(p) = doc.and_then(|doc| Presence::parse(&doc, protocol)) else {
                continue;
            };
            if let Some((change, p)) = list.apply(p) {
                println!("{}", presence_line(Some(change), &p, args.json));
            }
        }
    }
    eprintln!("the hub ended the stream");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn subscribe_args(args: &[&str]) -> SubscribeArgs {
        let argv = ["hubbub", "subscribe"].iter().chain(args);
        match Cli::try_parse_from(argv).expect("the flags parse").command {
            Command::Subscribe(args) => args,
            other => panic!("not subscribe: {other:?}"),
        }
    }

    #[test]
    fn each_generation_selects_with_its_own_parameters() {
        let v1 = subscribe_args(&[
            "--match",
            "https://a/1",
            "--match-urlpattern",
            "https://a/:id",
            "--last-event-id",
            "x",
        ]);
        assert_eq!(v1.to.protocol, Protocol::V1, "1.0 by default");
        assert_eq!(
            subscribe_query(&v1).unwrap(),
            [
                ("match", "https://a/1"),
                ("match_urlpattern", "https://a/:id"),
                ("last_event_id", "x"),
            ]
        );
        let legacy = subscribe_args(&["--protocol", "0.x", "--topic", "https://a/{id}"]);
        assert_eq!(
            subscribe_query(&legacy).unwrap(),
            [("topic", "https://a/{id}")]
        );
        let mixed = subscribe_args(&["--topic", "https://a/1"]);
        assert!(
            subscribe_query(&mixed).is_err(),
            "--topic needs --protocol 0.x"
        );
        let mixed = subscribe_args(&["--protocol", "0.x", "--match", "https://a/1"]);
        assert!(subscribe_query(&mixed).is_err(), "--match is 1.0");
        assert!(
            Cli::try_parse_from(["hubbub", "subscribe"]).is_err(),
            "a selector is required"
        );
    }

    #[test]
    fn presence_follows_the_list_from_both_generations() {
        let v1 = |id: &str, active: bool| {
            serde_json::json!({
                "id": format!("/.well-known/mercure/subscriptions/exact/https%3A%2F%2Fa%2F1/{id}"),
                "type": "subscription", "match_type": "exact", "match": "https://a/1",
                "subscriber": id, "active": active, "payload": {"name": "x"},
            })
        };
        let parse = |doc| Presence::parse(&doc, Protocol::V1).expect("a 1.0 document");
        let mut list = PresenceList::default();
        let added = list.apply(parse(v1("urn:uuid:1", true))).unwrap();
        assert_eq!(added.0, Change::Added);
        assert_eq!(
            presence_line(None, &added.1, false),
            r#"urn:uuid:1 exact https://a/1 {"name":"x"}"#
        );
        assert_eq!(
            presence_line(Some(added.0), &added.1, false),
            r#"+ urn:uuid:1 exact https://a/1 {"name":"x"}"#
        );
        assert_eq!(list.apply(parse(v1("urn:uuid:1", true))), None, "no change");
        list.apply(parse(v1("urn:uuid:2", true))).unwrap();
        let removed = list.apply(parse(v1("urn:uuid:1", false))).unwrap();
        assert_eq!(removed.0, Change::Removed);
        assert_eq!(
            presence_line(Some(removed.0), &removed.1, true),
            serde_json::json!({"change": "removed", "subscription": v1("urn:uuid:1", false)})
                .to_string()
        );
        assert_eq!(
            list.apply(parse(v1("urn:uuid:1", false))),
            None,
            "gone already"
        );
        let ids: Vec<_> = list.0.iter().map(|p| p.subscriber.as_str()).collect();
        assert_eq!(ids, ["urn:uuid:2"]);

        let legacy = serde_json::json!({
            "@context": "https://mercure.rocks/",
            "id": "/.well-known/mercure/subscriptions/https%3A%2F%2Fa%2F%7Bid%7D/urn%3Auuid%3A3",
            "type": "Subscription", "topic": "https://a/{id}", "subscriber": "urn:uuid:3",
            "active": true,
        });
        let p = Presence::parse(&legacy, Protocol::Legacy).expect("a 0.x document");
        assert_eq!(
            p.line(),
            "urn:uuid:3 topic https://a/{id}",
            "no payload: none shown"
        );
        assert!(
            Presence::parse(&legacy, Protocol::V1).is_none(),
            "a 0.x twin is not a 1.0 event"
        );
        assert!(Presence::parse(&v1("urn:uuid:1", true), Protocol::Legacy).is_none());
    }

    #[test]
    fn presence_reads_the_cursor_and_derives_its_urls() {
        use reqwest::header::{HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"urn:uuid:e\""));
        assert_eq!(
            presence_cursor(&headers, &serde_json::json!({})).as_deref(),
            Some("urn:uuid:e")
        );
        headers.insert(
            "link",
            HeaderValue::from_static(
                r#"<http://h/.well-known/mercure>; rel="mercure"; last-event-id="urn:uuid:l"; type="mercure""#,
            ),
        );
        assert_eq!(
            presence_cursor(&headers, &serde_json::json!({})).as_deref(),
            Some("urn:uuid:l")
        );
        let body = serde_json::json!({"lastEventID": "earliest"});
        assert_eq!(
            presence_cursor(&headers, &body).as_deref(),
            Some("earliest")
        );

        let (url, selector) =
            presence_urls("http://h:1/.well-known/mercure?x=1", Protocol::V1).unwrap();
        assert_eq!(url.as_str(), "http://h:1/.well-known/mercure/subscriptions");
        assert_eq!(selector, "/.well-known/mercure/subscriptions/*");
        let (_, selector) = presence_urls("http://h/hub/", Protocol::Legacy).unwrap();
        assert_eq!(selector, "/hub/subscriptions/{topic}/{subscriber}");

        let presence = subscribe_args(&["--presence", "--protocol", "0.x"]);
        assert!(presence.presence, "--presence needs no selector");
        let argv = ["hubbub", "subscribe", "--presence", "--match", "x"];
        assert!(Cli::try_parse_from(argv).is_err(), "nor takes one");
    }

    #[test]
    fn the_audience_is_the_hub_url_without_query() {
        assert_eq!(
            resource_of("http://127.0.0.1:8080/.well-known/mercure?x=1#f").unwrap(),
            "http://127.0.0.1:8080/.well-known/mercure"
        );
        assert_eq!(
            resource_of("http://localhost:80/.well-known/mercure").unwrap(),
            "http://localhost/.well-known/mercure",
            "as the Host header names it: no default port"
        );
        assert!(resource_of("not a url").is_err());
    }
}
