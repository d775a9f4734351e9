//! The bench payload codec: who sent a message, its sequence number and when.
//!
//! Format: `b<run hex>:<publisher>:<seq>:<unix nanos>:` then `x` padding up to the
//! requested size. ASCII only, no characters that need escaping in a form body, an
//! SSE `data:` line or an nchan message, so every server passes it through untouched.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a subscriber learns from one delivered payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Random per bench run, so stale messages of an earlier run (nchan keeps a
    /// buffer per channel) are recognised as foreign instead of as duplicates.
    pub run: u32,
    pub publisher: u32,
    /// Per (publisher, topic) stream, starting at 1.
    pub seq: u64,
    /// CLOCK_REALTIME at send time; all bench processes share the machine's clock.
    pub sent_nanos: u64,
}

/// Encodes `stamp`, padded with `x` to `size` bytes (never truncated below the stamp).
pub fn encode(stamp: &Stamp, size: usize) -> String {
    let mut s = String::with_capacity(size.max(48));
    // Writing to a String cannot fail.
    let _ = write!(
        s,
        "b{:x}:{}:{}:{}:",
        stamp.run, stamp.publisher, stamp.seq, stamp.sent_nanos
    );
    while s.len() < size {
        s.push('x');
    }
    s
}

/// Decodes a payload written by [`encode`]; `None` for anything else.
pub fn decode(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(b"b")?;
    let mut fields = rest.splitn(5, |b| *b == b':');
    let run = parse_hex(fields.next()?)?;
    let publisher = u32::try_from(parse_dec(fields.next()?)?).ok()?;
    let seq = parse_dec(fields.next()?)?;
    let sent_nanos = parse_dec(fields.next()?)?;
    // The fifth piece (padding) must exist: it proves the nanos field was terminated.
    fields.next()?;
    Some(Stamp {
        run: u32::try_from(run).ok()?,
        publisher,
        seq,
        sent_nanos,
    })
}

/// Wall-clock nanoseconds since the epoch (0 if the clock is before 1970).
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn parse_dec(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, b| {
        let d = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    s.iter().try_fold(0u64, |acc, b| {
        let d = (*b as char).to_digit(16)?;
        Some(acc << 4 | u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            run: 0xdead_beef,
            publisher: 3,
            seq: 42,
            sent_nanos: 1_700_000_000_123_456_789,
        }
    }

    #[test]
    fn round_trips_and_pads() {
        let s = encode(&stamp(), 200);
        assert_eq!(s.len(), 200);
        assert!(s.ends_with("xxx"));
        assert_eq!(decode(s.as_bytes()), Some(stamp()));
    }

    #[test]
    fn never_truncates_below_the_stamp() {
        let s = encode(&stamp(), 4);
        assert!(s.len() > 4);
        assert_eq!(decode(s.as_bytes()), Some(stamp()));
    }

    #[test]
    fn rejects_foreign_data() {
        for bad in [
            &b""[..],
            b"hello",
            b"b1:2:3",
            b"b1:2:3:4",
            b"bzz:1:2:3:",
            b"b1:-1:2:3:",
            b"b1:1:2:3x:",
        ] {
            assert_eq!(decode(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_nanos() > 1_577_836_800_000_000_000);
    }
}
