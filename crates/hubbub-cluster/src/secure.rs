//! The relay channel's security: a Noise handshake keyed by the cluster secret
//! that binds both endpoints, then every frame sealed with fresh session keys.
//!
//! Why Noise `NNpsk0` (X25519, ChaCha20-Poly1305, SHA-256, the `snow` crate)
//! rather than TLS: the nodes share one secret and no PKI; Noise with a
//! pre-shared key gives exactly mutual proof of that secret, forward-secret
//! session keys from fresh ephemeral keys (so nothing recorded can be replayed
//! into another session), and per-frame authenticated encryption with implicit
//! counters (so frames cannot be read, altered, dropped from the middle,
//! reordered or replayed without the link failing), in a few hundred lines and
//! without certificates to issue and rotate.
//!
//! The prologue (hashed into the handshake by both sides) holds the protocol,
//! the cluster id and BOTH identities: who dials and whom it means to reach.
//! A proxy that hands one node's connection to another node (reflection) makes
//! the two sides hash different prologues, and the handshake fails.
//!
//! On the wire, a link starts with a clear-text [`Preamble`] (so the listener
//! can build the same prologue), then two Noise messages; after that every
//! length-delimited frame is one Noise transport message. A relay message
//! larger than one Noise message (64 KiB) is split into pieces, each sealed on
//! its own, with a flag saying whether more follow.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use sha2::{Digest, Sha256};
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::stamp::Origin;
use crate::wire::MAX_FRAME;

const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";
const PROTOCOL: &[u8] = b"hubbub-relay-v2";
/// The largest Noise message, and its authentication tag.
const NOISE_MAX: usize = 65_535;
const TAG: usize = 16;
/// Plain bytes of a relay message per sealed piece (one byte is the flag).
const PIECE: usize = NOISE_MAX - TAG - 1;
const MORE: u8 = 1;
const LAST: u8 = 0;

pub type Framing = Framed<TcpStream, LengthDelimitedCodec>;

#[derive(Debug, Error)]
pub enum SecureError {
    #[error("relay preamble: {0}")]
    Preamble(&'static str),
    #[error("relay handshake failed (wrong cluster secret, or not the node it claims to be)")]
    Handshake,
    #[error("a relay frame failed authentication")]
    Tampered,
    #[error("relay message larger than {MAX_FRAME} bytes")]
    TooLarge,
    #[error("relay link I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<SecureError> for std::io::Error {
    fn from(e: SecureError) -> Self {
        match e {
            SecureError::Io(e) => e,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Who dials whom, in the clear before the handshake. It is only a claim: the
/// handshake then proves it (both sides hash it into the prologue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preamble {
    pub cluster: String,
    pub dialer: Origin,
    pub listener: Origin,
}

impl Preamble {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_slice(PROTOCOL);
        for s in [
            self.cluster.as_str(),
            &self.dialer.node,
            &self.listener.node,
        ] {
            b.put_u16(s.len() as u16);
            b.put_slice(s.as_bytes());
        }
        b.put_u64(self.dialer.generation);
        b.put_u64(self.listener.generation);
        b.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, SecureError> {
        if !b.starts_with(PROTOCOL) {
            return Err(SecureError::Preamble("not a hubbub relay (v2) peer"));
        }
        b.advance(PROTOCOL.len());
        let cluster = take_str(&mut b)?;
        let dialer = take_str(&mut b)?;
        let listener = take_str(&mut b)?;
        if b.len() != 16 {
            return Err(SecureError::Preamble("malformed"));
        }
        Ok(Self {
            cluster,
            dialer: Origin::new(dialer, b.get_u64()),
            listener: Origin::new(listener, b.get_u64()),
        })
    }
}

fn take_str(b: &mut &[u8]) -> Result<String, SecureError> {
    if b.len() < 2 {
        return Err(SecureError::Preamble("truncated"));
    }
    let n = b.get_u16() as usize;
    if b.len() < n {
        return Err(SecureError::Preamble("truncated"));
    }
    let s = std::str::from_utf8(&b[..n]).map_err(|_| SecureError::Preamble("not UTF-8"))?;
    b.advance(n);
    Ok(s.to_owned())
}

/// The Noise pre-shared key: the cluster secret of any length, hashed to 32 bytes.
pub fn psk(secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hubbub relay psk v2\0");
    h.update(secret);
    h.finalize().into()
}

fn builder<'a>(psk: &'a [u8; 32], prologue: &'a [u8]) -> Result<snow::Builder<'a>, SecureError> {
    let params = NOISE_PARAMS.parse().map_err(|_| SecureError::Handshake)?;
    snow::Builder::new(params)
        .psk(0, psk)
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| SecureError::Handshake)
}

/// The dialer's side: sends the preamble and the first Noise message, reads
/// the listener's answer (whose payload is `have`, where to resume).
pub async fn dial(
    mut link: Framing,
    preamble: &Preamble,
    psk: &[u8; 32],
) -> Result<(SecureLink, u64), SecureError> {
    let pre = preamble.encode();
    let mut noise = builder(psk, &pre)?
        .build_initiator()
        .map_err(|_| SecureError::Handshake)?;
    let mut buf = vec![0u8; NOISE_MAX];
    let n = noise
        .write_message(&[], &mut buf)
        .map_err(|_| SecureError::Handshake)?;
    link.feed(pre).await?;
    link.send(Bytes::copy_from_slice(&buf[..n])).await?;
    let answer = next_frame(&mut link).await?;
    let n = noise
        .read_message(&answer, &mut buf)
        .map_err(|_| SecureError::Handshake)?;
    let have = <[u8; 8]>::try_from(&buf[..n])
        .map(u64::from_be_bytes)
        .map_err(|_| SecureError::Handshake)?;
    let noise = noise
        .into_transport_mode()
        .map_err(|_| SecureError::Handshake)?;
    Ok((SecureLink::new(link, noise), have))
}

/// The listener's side, after it read and accepted the preamble: checks the
/// dialer's first Noise message (proof of the secret over this very preamble).
pub async fn accept(
    mut link: Framing,
    preamble: &Preamble,
    psk: &[u8; 32],
) -> Result<Accepted, SecureError> {
    let pre = preamble.encode();
    let mut noise = builder(psk, &pre)?
        .build_responder()
        .map_err(|_| SecureError::Handshake)?;
    let first = next_frame(&mut link).await?;
    let mut buf = vec![0u8; NOISE_MAX];
    noise
        .read_message(&first, &mut buf)
        .map_err(|_| SecureError::Handshake)?;
    Ok(Accepted { link, noise })
}

/// A dialer that proved the secret, waiting for the listener's answer.
pub struct Accepted {
    link: Framing,
    noise: snow::HandshakeState,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted").finish_non_exhaustive()
    }
}

impl Accepted {
    /// Answers with `have` (where the dialer resumes) and opens the channel.
    pub async fn welcome(mut self, have: u64) -> Result<SecureLink, SecureError> {
        let mut buf = vec![0u8; NOISE_MAX];
        let n = self
            .noise
            .write_message(&have.to_be_bytes(), &mut buf)
            .map_err(|_| SecureError::Handshake)?;
        self.link.send(Bytes::copy_from_slice(&buf[..n])).await?;
        let noise = self
            .noise
            .into_transport_mode()
            .map_err(|_| SecureError::Handshake)?;
        Ok(SecureLink::new(self.link, noise))
    }
}

/// Reads one frame; the end of the stream is an error during a handshake.
pub async fn next_frame(link: &mut Framing) -> Result<BytesMut, SecureError> {
    match link.next().await {
        Some(frame) => Ok(frame?),
        None => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into()),
    }
}

/// An established relay channel: relay messages in, relay messages out, each
/// sealed; anything that fails to open ends the link.
pub struct SecureLink {
    link: Framing,
    noise: snow::TransportState,
    buf: Vec<u8>,
    assembling: Vec<u8>,
}

impl std::fmt::Debug for SecureLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureLink").finish_non_exhaustive()
    }
}

impl SecureLink {
    fn new(mut link: Framing, noise: snow::TransportState) -> Self {
        // Authenticated now: the codec may take full-size (sealed) pieces.
        link.codec_mut().set_max_frame_length(NOISE_MAX);
        Self {
            link,
            noise,
            buf: vec![0u8; NOISE_MAX],
            assembling: Vec::new(),
        }
    }

    /// Seals `message` (in pieces if large) and queues it; returns the bytes
    /// put on the wire. Call [`flush`](Self::flush) to send.
    pub async fn feed(&mut self, message: &[u8]) -> Result<usize, SecureError> {
        let mut pieces = message.chunks(PIECE).peekable();
        let mut wire = 0;
        let mut plain = Vec::with_capacity(message.len().min(PIECE) + 1);
        loop {
            let piece = pieces.next().unwrap_or_default();
            plain.clear();
            plain.push(if pieces.peek().is_some() { MORE } else { LAST });
            plain.extend_from_slice(piece);
            let n = self
                .noise
                .write_message(&plain, &mut self.buf)
                .map_err(|_| SecureError::Tampered)?;
            self.link
                .feed(Bytes::copy_from_slice(&self.buf[..n]))
                .await?;
            wire += n + 4;
            if pieces.peek().is_none() {
                return Ok(wire);
            }
        }
    }

    pub async fn flush(&mut self) -> Result<(), SecureError> {
        Ok(SinkExt::<Bytes>::flush(&mut self.link).await?)
    }

    /// The next whole relay message and the bytes it took on the wire, or
    /// `None` at a clean end of the stream.
    pub async fn recv(&mut self) -> Result<Option<(Vec<u8>, usize)>, SecureError> {
        self.assembling.clear();
        let mut wire = 0;
        loop {
            let Some(frame) = self.link.next().await.transpose()? else {
                return Ok(None);
            };
            wire += frame.len() + 4;
            let n = self
                .noise
                .read_message(&frame, &mut self.buf)
                .map_err(|_| SecureError::Tampered)?;
            let (flag, piece) = self.buf[..n].split_first().ok_or(SecureError::Tampered)?;
            if self.assembling.len() + piece.len() > MAX_FRAME {
                return Err(SecureError::TooLarge);
            }
            self.assembling.extend_from_slice(piece);
            if *flag == LAST {
                return Ok(Some((std::mem::take(&mut self.assembling), wire)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    fn framing(stream: TcpStream) -> Framing {
        Framed::new(
            stream,
            LengthDelimitedCodec::builder()
                .max_frame_length(4096)
                .new_codec(),
        )
    }

    fn preamble(listener: &str) -> Preamble {
        Preamble {
            cluster: "c".into(),
            dialer: Origin::new("a", 1),
            listener: Origin::new(listener, 2),
        }
    }

    /// Runs a handshake where the two sides may disagree on the secret or on
    /// the preamble (as when a proxy rewrites it), then a message each way.
    async fn run(
        dialer: (Preamble, &[u8]),
        listener: (Preamble, &[u8]),
        message: Vec<u8>,
    ) -> Result<Vec<u8>, SecureError> {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (dialer, key) = (dialer.0, psk(dialer.1));
        let client = tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let (mut link, have) = dial(framing(stream), &dialer, &key).await?;
            assert_eq!(have, 42);
            link.feed(&message).await?;
            link.flush().await?;
            Ok::<_, SecureError>(link)
        });
        let (stream, _) = server.accept().await.unwrap();
        let mut framed = framing(stream);
        let _clear = next_frame(&mut framed).await?;
        let accepted = accept(framed, &listener.0, &psk(listener.1)).await?;
        let mut link = accepted.welcome(42).await?;
        let got = link.recv().await?.map(|(m, _)| m).unwrap_or_default();
        drop(client.await.unwrap()?);
        Ok(got)
    }

    #[tokio::test]
    async fn same_secret_and_preamble_open_a_channel_for_any_size() {
        for size in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 7] {
            let message: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let got = run(
                (preamble("b"), b"s"),
                (preamble("b"), b"s"),
                message.clone(),
            )
            .await
            .unwrap();
            assert_eq!(got, message, "size {size}");
        }
    }

    #[tokio::test]
    async fn another_secret_fails_the_handshake() {
        let r = run((preamble("b"), b"s"), (preamble("b"), b"other"), vec![1]).await;
        assert!(matches!(r, Err(SecureError::Handshake)), "{r:?}");
    }

    /// Reflection: the dialer meant to reach "x"; a proxy handed the
    /// connection to "b" and rewrote the clear preamble so "b" accepts it.
    #[tokio::test]
    async fn a_rewritten_preamble_fails_the_handshake() {
        let r = run((preamble("x"), b"s"), (preamble("b"), b"s"), vec![1]).await;
        assert!(matches!(r, Err(SecureError::Handshake)), "{r:?}");
    }

    #[test]
    fn preambles_round_trip_and_garbage_is_refused() {
        let p = preamble("node:with:colons");
        assert_eq!(Preamble::decode(&p.encode()).unwrap(), p);
        assert!(Preamble::decode(b"GET / HTTP/1.1").is_err());
        let enc = p.encode();
        for cut in 0..enc.len() {
            assert!(Preamble::decode(&enc[..cut]).is_err(), "cut at {cut}");
        }
    }
}
