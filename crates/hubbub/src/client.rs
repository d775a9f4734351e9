//! `hubbub publish` and `hubbub subscribe`: small clients for trying a hub from a
//! terminal (they work against any Mercure hub).

use anyhow::{Context, bail};
use futures_util::StreamExt;
use hubbub_proto::decode::{EventParser, Item};
use hubbub_server::DEV_JWT_KEY;

use crate::cli::{PublishArgs, SubscribeArgs};

/// A HS256 token with the given `mercure` claim (no expiry: a dev tool's token).
pub fn mint(key: &str, mercure: serde_json::Value) -> anyhow::Result<String> {
    Ok(hubbub_proto::token::mint_mercure(key, mercure, None)?)
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let hub = &args.to.hub;
    let token = match args.to.token {
        Some(t) => t,
        None => mint(
            args.jwt_key.as_deref().unwrap_or(DEV_JWT_KEY),
            serde_json::json!({ "publish": ["*"] }),
        )?,
    };
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

pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<()> {
    let query: Vec<(&str, &str)> = args.topic.iter().map(|t| ("topic", t.as_str())).collect();
    let mut request = reqwest::Client::new()
        .get(&args.to.hub)
        .query(&query)
        .header("accept", "text/event-stream");
    if let Some(id) = &args.last_event_id {
        request = request.header("last-event-id", id);
    }
    if let Some(token) = &args.to.token {
        request = request.bearer_auth(token);
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
