//! The sockets a node runs on, bound before it starts.
//!
//! Binding first (rather than inside [`Cluster::start`](crate::Cluster::start))
//! lets a caller bind port 0 and learn the real addresses before anything is
//! advertised or seeded: tests build a whole cluster on kernel-picked ports
//! without guessing which ones are free, and a node configured with port 0
//! advertises the port it actually got.
//!
//! Gossip: chitchat opens its socket through a [`Transport`] when it starts.
//! Its UDP socket type is the only one that speaks chitchat's wire format
//! (message encoding is private to chitchat), so [`GossipSocket::bind`] opens
//! one of those early and [`Prebound`] hands that very socket to chitchat
//! later. Datagram size cap, decoding and the handling of undecodable or
//! hostile datagrams (logged and skipped) therefore stay exactly chitchat's.

use std::net::SocketAddr;
use std::sync::Mutex;

use async_trait::async_trait;
use chitchat::transport::{Socket, Transport, UdpTransport};
use thiserror::Error;
use tokio::net::TcpListener;

/// A socket that could not be bound (`ClusterError` has the same cases).
#[derive(Debug, Error)]
pub enum BindError {
    #[error("cannot bind {addr} for gossip: {reason}")]
    Gossip { addr: SocketAddr, reason: String },
    #[error("cannot listen for relay links on {addr}: {source}")]
    Relay {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound gossip (UDP) socket, not yet handed to chitchat.
pub struct GossipSocket {
    socket: Box<dyn Socket>,
    addr: SocketAddr,
}

impl std::fmt::Debug for GossipSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GossipSocket")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl GossipSocket {
    /// Binds `addr` for gossip (port 0: the kernel picks one; see
    /// [`local_addr`](Self::local_addr)).
    pub async fn bind(addr: SocketAddr) -> Result<Self, BindError> {
        let gossip_error = |reason: String| BindError::Gossip { addr, reason };
        let socket = UdpTransport
            .open(addr)
            .await
            .map_err(|e| gossip_error(format!("{e:#}")))?;
        let addr = socket
            .local_addr()
            .map_err(|e| gossip_error(format!("{e:#}")))?;
        Ok(Self { socket, addr })
    }

    /// The address it is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

/// Everything a cluster node listens on: gossip (UDP) and relay links (TCP).
/// HTTP is not the cluster's business: the server's `run` takes that listener.
#[derive(Debug)]
pub struct Sockets {
    pub gossip: GossipSocket,
    pub relay: TcpListener,
}

impl Sockets {
    /// Binds both (port 0 lets the kernel pick).
    pub async fn bind(gossip: SocketAddr, relay: SocketAddr) -> Result<Self, BindError> {
        let gossip = GossipSocket::bind(gossip).await?;
        let relay = TcpListener::bind(relay)
            .await
            .map_err(|source| BindError::Relay {
                addr: relay,
                source,
            })?;
        Ok(Self { gossip, relay })
    }
}

/// A [`Transport`] that hands out one socket bound earlier, once: chitchat
/// opens its socket exactly once, at start. The address chitchat asks for is
/// ignored (it is the configured listen address; the socket is what was bound).
pub(crate) struct Prebound(Mutex<Option<Box<dyn Socket>>>);

impl Prebound {
    pub(crate) fn new(socket: GossipSocket) -> Self {
        Self(Mutex::new(Some(socket.socket)))
    }
}

#[async_trait]
impl Transport for Prebound {
    async fn open(&self, _listen: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let socket = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        socket.ok_or_else(|| anyhow::anyhow!("the pre-bound gossip socket was already opened"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prebound_socket_is_opened_once_on_its_own_address() {
        let socket = GossipSocket::bind("127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("binds");
        let addr = socket.local_addr();
        assert_ne!(addr.port(), 0, "the kernel's pick");
        let transport = Prebound::new(socket);
        let unrelated = "127.0.0.1:9".parse().expect("an address");
        let opened = transport.open(unrelated).await.expect("opens");
        assert_eq!(opened.local_addr().expect("an address"), addr);
        assert!(transport.open(addr).await.is_err(), "only once");
    }

    #[tokio::test]
    async fn binding_a_taken_port_is_an_error() {
        let first = GossipSocket::bind("127.0.0.1:0".parse().expect("an address"))
            .await
            .expect("binds");
        let again = GossipSocket::bind(first.local_addr()).await;
        assert!(matches!(again, Err(BindError::Gossip { .. })), "{again:?}");
    }
}
