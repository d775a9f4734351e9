//! `hubbub serve`: build the settings, bind, print the dev banner, wire signals
//! (SIGTERM/SIGINT drain and stop, SIGHUP reloads the config file).

use anyhow::Context;
use hubbub_server::{DEV_JWT_KEY, HUB_PATH, Server};
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
        print_dev_banner(addr)?;
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

fn print_dev_banner(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let token = crate::client::mint(
        DEV_JWT_KEY,
        serde_json::json!({ "publish": ["*"], "subscribe": ["*"] }),
    )?;
    let hub = format!("http://{addr}{HUB_PATH}");
    eprintln!(
        "\n  hubbub is running in DEVELOPMENT mode: the JWT key is Mercure's public dev key\n  \
         ({DEV_JWT_KEY}) and anyone may subscribe. Do not expose it.\n\n  \
         page:       http://{addr}/\n  hub:        {hub}\n  \
         publisher token (also valid for private subscriptions):\n    {token}\n\n  \
         try it:\n    curl -N '{hub}?topic=https://example.com/demo'\n    \
         curl -d 'topic=https://example.com/demo' -d 'data=hello' -H 'Authorization: Bearer {token}' {hub}\n"
    );
    Ok(())
}
