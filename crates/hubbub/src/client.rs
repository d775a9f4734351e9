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
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.to.hub))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        bail!("the hub answered {status}: {}", body.trim());
    }
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
