//! The relay protocol: length-delimited binary frames on a TCP link. After the
//! handshake a link carries one node's messages to one peer: its own updates in
//! sequence order, watermarks, anti-entropy pulls and their answers.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hubbub_proto::Update;
use thiserror::Error;

use crate::stamp::{Origin, Stamp, Stamped};

/// Largest frame accepted on a relay link.
pub const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Update(Arc<Stamped>),
    /// "None of my own updates at or below this stamp is still to come."
    Watermark(u64),
    /// "Send me `origin`'s updates `from..=to`."
    Pull {
        origin: Origin,
        from: u64,
        to: u64,
    },
    /// End of a pull answer; `first` is the first seq still retained (a gap if > from).
    PullEnd {
        origin: Origin,
        from: u64,
        first: u64,
    },
    /// "I hold your origin `origin` up to `hwm` (contiguous)": sent back to
    /// an origin that publishes with replicated acknowledgements.
    Ack {
        origin: Origin,
        hwm: u64,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated relay frame")]
    Truncated,
    #[error("unknown relay message type {0}")]
    UnknownType(u8),
    #[error("invalid UTF-8 in a relay frame")]
    Utf8,
}

impl Msg {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        match self {
            Msg::Update(s) => {
                b.put_u8(4);
                put_stamped(&mut b, s);
            }
            Msg::Watermark(hlc) => {
                b.put_u8(5);
                b.put_u64(*hlc);
            }
            Msg::Pull { origin, from, to } => {
                b.put_u8(6);
                put_origin(&mut b, origin);
                b.put_u64(*from);
                b.put_u64(*to);
            }
            Msg::PullEnd {
                origin,
                from,
                first,
            } => {
                b.put_u8(7);
                put_origin(&mut b, origin);
                b.put_u64(*from);
                b.put_u64(*first);
            }
            Msg::Ack { origin, hwm } => {
                b.put_u8(8);
                put_origin(&mut b, origin);
                b.put_u64(*hwm);
            }
        }
        b.freeze()
    }

    pub fn decode(mut b: &[u8]) -> Result<Self, WireError> {
        let b = &mut b;
        Ok(match get_u8(b)? {
            4 => Msg::Update(Arc::new(get_stamped(b)?)),
            5 => Msg::Watermark(get_u64(b)?),
            6 => Msg::Pull {
                origin: get_origin(b)?,
                from: get_u64(b)?,
                to: get_u64(b)?,
            },
            7 => Msg::PullEnd {
                origin: get_origin(b)?,
                from: get_u64(b)?,
                first: get_u64(b)?,
            },
            8 => Msg::Ack {
                origin: get_origin(b)?,
                hwm: get_u64(b)?,
            },
            // 1-3 were the handshake before the Noise channel (`secure.rs`): retired.
            t => return Err(WireError::UnknownType(t)),
        })
    }
}

fn put_str(b: &mut BytesMut, s: &str) {
    put_bytes(b, s.as_bytes());
}

fn put_bytes(b: &mut BytesMut, s: &[u8]) {
    b.put_u32(s.len() as u32);
    b.put_slice(s);
}

fn put_origin(b: &mut BytesMut, o: &Origin) {
    put_str(b, &o.node);
    b.put_u64(o.generation);
}

fn put_stamped(b: &mut BytesMut, s: &Stamped) {
    b.put_u64(s.stamp.hlc);
    put_origin(b, &s.stamp.origin);
    b.put_u64(s.stamp.seq);
    let u = &s.update;
    put_str(b, &u.id);
    b.put_u32(u.topics.len() as u32);
    for t in &u.topics {
        put_str(b, t);
    }
    put_str(b, &u.data);
    let flags = u8::from(u.private)
        | (u8::from(u.event_type.is_some()) << 1)
        | (u8::from(u.retry.is_some()) << 2);
    b.put_u8(flags);
    if let Some(t) = &u.event_type {
        put_str(b, t);
    }
    if let Some(r) = u.retry {
        b.put_u64(r);
    }
}

fn get_stamped(b: &mut &[u8]) -> Result<Stamped, WireError> {
    let stamp = Stamp {
        hlc: get_u64(b)?,
        origin: get_origin(b)?,
        seq: get_u64(b)?,
    };
    let id = get_str(b)?;
    let n = get_u32(b)? as usize;
    let mut topics = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        topics.push(get_str(b)?);
    }
    let data = get_str(b)?;
    let flags = get_u8(b)?;
    let event_type = if flags & 2 != 0 {
        Some(get_str(b)?)
    } else {
        None
    };
    let retry = if flags & 4 != 0 {
        Some(get_u64(b)?)
    } else {
        None
    };
    Ok(Stamped {
        stamp,
        update: Update {
            id,
            topics,
            data,
            private: flags & 1 != 0,
            event_type,
            retry,
        },
    })
}

fn need(b: &[u8], n: usize) -> Result<(), WireError> {
    if b.remaining() < n {
        Err(WireError::Truncated)
    } else {
        Ok(())
    }
}

fn get_u8(b: &mut &[u8]) -> Result<u8, WireError> {
    need(b, 1)?;
    Ok(b.get_u8())
}

fn get_u32(b: &mut &[u8]) -> Result<u32, WireError> {
    need(b, 4)?;
    Ok(b.get_u32())
}

fn get_u64(b: &mut &[u8]) -> Result<u64, WireError> {
    need(b, 8)?;
    Ok(b.get_u64())
}

fn get_bytes(b: &mut &[u8]) -> Result<Vec<u8>, WireError> {
    let n = get_u32(b)? as usize;
    need(b, n)?;
    let v = b[..n].to_vec();
    b.advance(n);
    Ok(v)
}

fn get_str(b: &mut &[u8]) -> Result<String, WireError> {
    String::from_utf8(get_bytes(b)?).map_err(|_| WireError::Utf8)
}

fn get_origin(b: &mut &[u8]) -> Result<Origin, WireError> {
    Ok(Origin::new(get_str(b)?, get_u64(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped() -> Stamped {
        Stamped {
            stamp: Stamp {
                hlc: 42 << 16,
                origin: Origin::new("n1", 7),
                seq: 3,
            },
            update: Update {
                id: "urn:x".into(),
                topics: vec!["a".into(), "b".into()],
                data: "line\n\nline".into(),
                private: true,
                event_type: Some("t".into()),
                retry: Some(9),
            },
        }
    }

    #[test]
    fn every_message_round_trips() {
        let msgs = [
            Msg::Update(Arc::new(stamped())),
            Msg::Watermark(99),
            Msg::Pull {
                origin: Origin::new("x", 1),
                from: 2,
                to: 9,
            },
            Msg::PullEnd {
                origin: Origin::new("x", 1),
                from: 2,
                first: 4,
            },
            Msg::Ack {
                origin: Origin::new("y", 3),
                hwm: 11,
            },
        ];
        for m in msgs {
            assert_eq!(Msg::decode(&m.encode()), Ok(m));
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let full = Msg::Update(Arc::new(stamped())).encode();
        for cut in 0..full.len() {
            assert!(Msg::decode(&full[..cut]).is_err());
        }
        assert_eq!(Msg::decode(&[200]), Err(WireError::UnknownType(200)));
        assert_eq!(Msg::decode(&[1]), Err(WireError::UnknownType(1)), "retired");
    }
}
