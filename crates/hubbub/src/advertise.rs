//! The address peers reach this node at, found when the operator did not say.
//!
//! A node listening on `0.0.0.0` in a container or pod has one address that
//! its peers can dial, and it differs per container: asking for it in the
//! configuration would make every node's config different (and `--scale`
//! impossible). The kernel already knows it: it is the source address it
//! picks for traffic toward the seeds. Likewise the node id defaults to the
//! host name (a pod or container name): the server reads no environment.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};

use hubbub_server::config::Config;

/// In a cluster: sets `node_id` to the host name when unset, and
/// `gossip_advertise` / `relay_advertise` when they are unset and the node
/// listens on an unspecified address.
pub fn fill_in(config: &mut Config) {
    if config.seeds.is_empty() {
        return;
    }
    config.node_id.get_or_insert_with(host_name);
    let wanted = |advertise: &Option<String>, listen: SocketAddr| {
        advertise.is_none() && listen.ip().is_unspecified()
    };
    let gossip = wanted(&config.gossip_advertise, config.gossip_listen);
    let relay = wanted(&config.relay_advertise, config.relay_listen);
    if !gossip && !relay {
        return;
    }
    let Some(ip) = own_address(&config.seeds) else {
        tracing::warn!("cannot find this node's address: set gossip_advertise and relay_advertise");
        return;
    };
    if gossip {
        config.gossip_advertise =
            Some(SocketAddr::new(ip, config.gossip_listen.port()).to_string());
    }
    if relay {
        config.relay_advertise = Some(SocketAddr::new(ip, config.relay_listen.port()).to_string());
    }
    tracing::info!(%ip, "advertising this node's address toward the seeds");
}

/// The source address toward the first seed that resolves (connecting a UDP
/// socket sends nothing), else the first address the host name resolves to
/// that is not loopback (containers list their own address in /etc/hosts).
fn own_address(seeds: &[String]) -> Option<IpAddr> {
    let toward_seed = seeds
        .iter()
        .filter_map(|seed| seed.to_socket_addrs().ok())
        .flatten()
        .find_map(source_toward);
    toward_seed.or_else(host_address)
}

fn source_toward(peer: SocketAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(peer).ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

/// The host name (a pod name in Kubernetes): `$HOSTNAME`, else `/etc/hostname`.
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "hubbub".into())
}

fn host_address() -> Option<IpAddr> {
    let host = std::fs::read_to_string("/etc/hostname").ok()?;
    (host.trim(), 0)
        .to_socket_addrs()
        .ok()?
        .map(|a| a.ip())
        .find(|ip| !ip.is_loopback() && !ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_toward_a_loopback_seed_is_loopback() {
        let ip = own_address(&["127.0.0.1:7946".into()]).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn only_unset_advertise_addresses_on_unspecified_listeners_are_filled_in() {
        let mut c = Config {
            seeds: vec!["127.0.0.2:7946".into()],
            gossip_listen: "0.0.0.0:7000".parse().unwrap(),
            relay_listen: "0.0.0.0:7001".parse().unwrap(),
            relay_advertise: Some("relay.example:1".into()),
            ..Config::default()
        };
        fill_in(&mut c);
        assert_eq!(
            c.node_id,
            Some(host_name()),
            "clustered: named after the host"
        );
        assert_eq!(c.gossip_advertise.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(c.relay_advertise.as_deref(), Some("relay.example:1"));

        let mut single = Config {
            gossip_listen: "0.0.0.0:7000".parse().unwrap(),
            ..Config::default()
        };
        fill_in(&mut single);
        assert_eq!(single.gossip_advertise, None, "no seeds: not clustered");
        assert_eq!(single.node_id, None);
    }
}
