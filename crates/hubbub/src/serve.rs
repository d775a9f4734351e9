//! `hubbub serve`: build the settings, bind, print the dev banner, wire signals
//! (SIGTERM/SIGINT drain and stop, SIGHUP reloads the config file).

use anyhow::Context;
use std::net::SocketAddr;

use hubbub_server::{Config, DEV_ISSUER, DEV_JWT_KEY, HUB_PATH, Server};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::advertise;
use crate::cli::ServeArgs;

pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    crate::logging::init(args.log_format);
    let mut config = args.config()?;
    advertise::fill_in(&mut config);
    let mut settings = config.settings()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    // The HTTP address other members show for us is the bound one (it differs
    // from `listen` with port 0). Gossip and relay ports get the same
    // treatment when the cluster binds them.
    if let Some(http) = settings
        .cluster
        .as_mut()
        .and_then(|c| c.http_advertise.as_mut())
    {
        *http = addr.to_string();
    }
    if config.dev && config.jwt_key.is_none() {
        print_dev_banner(addr, &config)?;
    }
    if config.dev && !config.seeds.is_empty() && config.cluster_secret.is_none() {
        tracing::warn!("dev cluster: relay links use the public development secret");
    }
    let server = Server::start(settings).await?;
    let shutdown = CancellationToken::new();
    // Ours to stop: once the server has run its shutdown order, nothing is left to signal.
    let signals = tokio::spawn(watch_signals(server.clone(), args, shutdown.clone()));
    server.run(listener, shutdown).await?;
    signals.abort();
    tracing::info!("stopped");
    Ok(())
}

async fn watch_signals(
    server: Server,
    args: ServeArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&server, &args),
        }
    }
    tracing::info!("signal received: draining");
    shutdown.cancel();
    Ok(())
}

/// Keeps the old settings when the new ones do not validate.
fn reload(server: &Server, args: &ServeArgs) {
    let settings = args.config().and_then(|mut c| {
        advertise::fill_in(&mut c);
        Ok(c.settings()?)
    });
    match settings {
        Ok(settings) => {
            server.reload(settings);
            tracing::info!("configuration reloaded");
        }
        Err(e) => {
            server.reload_failed();
            tracing::error!(
                error = format!("{e:#}"),
                "reload failed; keeping the previous configuration"
            );
        }
    }
}

/// How long the banner's 1.0 token lasts: a dev hub's page should keep working.
const DEV_TOKEN_LIFETIME: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

fn print_dev_banner(addr: SocketAddr, config: &Config) -> anyhow::Result<()> {
    let audiences = dev_audiences(addr, config.oauth_resource.as_deref());
    let access_token = crate::client::mint_access_token(
        DEV_ISSUER,
        DEV_JWT_KEY,
        &audiences,
        &[(&["publish", "subscribe"], &["*"])],
        DEV_TOKEN_LIFETIME,
    )?;
    let legacy_token = crate::client::mint(
        DEV_JWT_KEY,
        serde_json::json!({ "publish": ["*"], "subscribe": ["*"] }),
    )?;
    let base = format!("http://{}", display_host(addr));
    let hub = format!("{base}{HUB_PATH}");
    let days = DEV_TOKEN_LIFETIME.as_secs() / 86_400;
    let audiences = audiences.join("\n      ");
    let cookie = &config.oauth_cookie_name;
    let legacy_cookie = &config.cookie_name;
    eprintln!(
        "\n  hubbub is running in DEVELOPMENT mode: the JWT key is Mercure's public dev key\n  \
         ({DEV_JWT_KEY}) and anyone may subscribe. Do not expose it.\n\n  \
         page:       {base}/\n  hub:        {hub}\n\n  \
         Mercure 1.0 access token (publish and subscribe on *, expires in {days} days):\n    \
         {access_token}\n  \
         issued by {DEV_ISSUER}; send it as a bearer token or in the {cookie} cookie;\n  \
         its audience (the hub's resource identifier on each name the page may be loaded from):\n      \
         {audiences}\n\n  \
         try it (Mercure 1.0):\n    \
         curl -N '{hub}?match=https://example.com/demo'\n    \
         curl -N '{hub}?match_urlpattern=https://example.com/:name'\n    \
         curl -d 'topic=https://example.com/demo' -d 'data=hello' -H 'Authorization: Bearer {access_token}' {hub}\n\n  \
         Mercure 0.x token, for 0.x clients (publish and subscribe on *):\n    \
         {legacy_token}\n  \
         a `mercure` claim signed with the JWT key; send it as a bearer token or in the {legacy_cookie} cookie\n  \
         try it (Mercure 0.x):\n    \
         curl -N '{hub}?topic=https://example.com/demo'\n    \
         curl -d 'topic=https://example.com/demo' -d 'data=hello' -H 'Authorization: Bearer {legacy_token}' {hub}\n"
    );
    Ok(())
}

/// The host a URL for `addr` names: an unspecified address (listening
/// everywhere) is reached as `localhost`.
fn display_host(addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The `aud` of the banner's 1.0 token: the configured resource identifier, else
/// the hub URL (the default identifier is derived from the `Host` header) for
/// the listen address and for the loopback names of its port, so the `/` page
/// works whichever of them the browser loaded it from.
fn dev_audiences(addr: SocketAddr, configured: Option<&str>) -> Vec<String> {
    if let Some(resource) = configured {
        return vec![resource.to_owned()];
    }
    let port = addr.port();
    let mut hosts = vec![display_host(addr), format!("localhost:{port}")];
    hosts.push(format!("127.0.0.1:{port}"));
    if addr.is_ipv6() {
        hosts.push(format!("[::1]:{port}"));
    }
    let mut audiences: Vec<String> = Vec::new();
    for host in hosts {
        let url = format!("http://{host}{HUB_PATH}");
        if !audiences.contains(&url) {
            audiences.push(url);
        }
    }
    audiences
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dev_token_names_every_loopback_spelling_of_the_hub() {
        let addr: SocketAddr = "127.0.0.1:4321".parse().unwrap();
        assert_eq!(
            dev_audiences(addr, None),
            [
                "http://127.0.0.1:4321/.well-known/mercure",
                "http://localhost:4321/.well-known/mercure",
            ]
        );
        let everywhere: SocketAddr = "[::]:80".parse().unwrap();
        assert_eq!(
            dev_audiences(everywhere, None),
            [
                "http://localhost:80/.well-known/mercure",
                "http://127.0.0.1:80/.well-known/mercure",
                "http://[::1]:80/.well-known/mercure",
            ]
        );
        assert_eq!(
            dev_audiences(addr, Some("https://hub.example/.well-known/mercure")),
            ["https://hub.example/.well-known/mercure"]
        );
    }
}
