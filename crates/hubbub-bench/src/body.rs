//! Incremental HTTP/1.1 response body decoding: chunked, fixed length, or until close.
//!
//! Decoders are fed whatever a read returned and hand out body slices borrowed from
//! that input, so a connection keeps no body buffer of its own.

/// How the response body is delimited, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Chunked,
    Length(u64),
    /// No length and not chunked: the body ends when the server closes.
    UntilClose,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BodyError {
    #[error("malformed chunk size line")]
    BadChunkSize,
    #[error("chunk size overflows")]
    ChunkTooLarge,
    #[error("missing CRLF after chunk data")]
    MissingChunkCrlf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size,
    /// Skipping `;extensions` up to the end of the size line.
    Ext,
    /// Saw CR of the size line.
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// After the last chunk: at the start of a trailer line.
    TrailerStart,
    /// Inside a (ignored) trailer line.
    TrailerLine,
    /// Saw CR of the final empty line.
    TrailerEndLf,
    Done,
}

/// Streaming decoder for one response body.
#[derive(Debug)]
pub struct BodyDecoder {
    framing: Framing,
    state: State,
    /// Bytes left in the current chunk, or of a fixed-length body.
    remaining: u64,
    digits: u8,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let (state, remaining) = match framing {
            Framing::Chunked => (State::Size, 0),
            Framing::Length(0) => (State::Done, 0),
            Framing::Length(n) => (State::Data, n),
            Framing::UntilClose => (State::Data, u64::MAX),
        };
        Self {
            framing,
            state,
            remaining,
            digits: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Feeds raw bytes, calling `out` with each piece of body. Returns the number of
    /// input bytes consumed: less than `input.len()` only once the body is complete
    /// (the rest belongs to the next response on a kept-alive connection).
    pub fn feed<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut impl FnMut(&'a [u8]),
    ) -> Result<usize, BodyError> {
        match self.framing {
            Framing::Chunked => self.feed_chunked(input, out),
            Framing::Length(_) | Framing::UntilClose => {
                if self.state == State::Done {
                    return Ok(0);
                }
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                if n > 0 {
                    out(&input[..n]);
                }
                if self.framing != Framing::UntilClose {
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::Done;
                    }
                }
                Ok(n)
            }
        }
    }

    fn feed_chunked<'a>(
        &mut self,
        input: &'a [u8],
        out: &mut impl FnMut(&'a [u8]),
    ) -> Result<usize, BodyError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                State::Done => return Ok(i),
                State::Data => {
                    let n = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    out(&input[i..i + n]);
                    self.remaining -= n as u64;
                    i += n;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        let d = u64::from((b as char).to_digit(16).unwrap_or(0));
                        if self.remaining > (u64::MAX >> 4) {
                            return Err(BodyError::ChunkTooLarge);
                        }
                        self.remaining = self.remaining << 4 | d;
                        self.digits = self.digits.saturating_add(1);
                    }
                    b'\r' if self.digits > 0 => self.state = State::SizeLf,
                    b'\n' if self.digits > 0 => self.end_size_line(),
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = State::Ext,
                    _ => return Err(BodyError::BadChunkSize),
                },
                State::Ext => match b {
                    b'\r' => self.state = State::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => {}
                },
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(BodyError::BadChunkSize);
                    }
                    self.end_size_line();
                }
                State::DataCr => match b {
                    b'\r' => self.state = State::DataLf,
                    // Be lenient with a bare LF, as most clients are.
                    b'\n' => self.state = State::Size,
                    _ => return Err(BodyError::MissingChunkCrlf),
                },
                State::DataLf => {
                    if b != b'\n' {
                        return Err(BodyError::MissingChunkCrlf);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => match b {
                    b'\r' => self.state = State::TrailerEndLf,
                    b'\n' => self.state = State::Done,
                    _ => self.state = State::TrailerLine,
                },
                State::TrailerLine => {
                    if b == b'\n' {
                        self.state = State::TrailerStart;
                    }
                }
                State::TrailerEndLf => {
                    if b != b'\n' {
                        return Err(BodyError::BadChunkSize);
                    }
                    self.state = State::Done;
                }
            }
            i += 1;
        }
        Ok(i)
    }

    fn end_size_line(&mut self) {
        self.digits = 0;
        self.state = if self.remaining == 0 {
            State::TrailerStart
        } else {
            State::Data
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` split at every possible pair of points, checking the same body.
    fn decode_all_splits(framing: Framing, input: &[u8]) -> (Vec<u8>, bool) {
        let whole = decode(framing, &[input]);
        for a in 0..=input.len() {
            for b in a..=input.len() {
                let parts = [&input[..a], &input[a..b], &input[b..]];
                assert_eq!(decode(framing, &parts), whole, "split at {a},{b}");
            }
        }
        whole
    }

    fn decode(framing: Framing, parts: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut d = BodyDecoder::new(framing);
        let mut body = Vec::new();
        for p in parts {
            let n = d
                .feed(p, &mut |s: &[u8]| body.extend_from_slice(s))
                .unwrap();
            assert!(n == p.len() || d.is_done());
        }
        (body, d.is_done())
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nX-T: y\r\n\r\n";
        assert_eq!(
            decode_all_splits(Framing::Chunked, input),
            (b"hello, world!!!".to_vec(), true)
        );
    }

    #[test]
    fn chunked_stream_without_end_is_not_done() {
        let input = b"3\r\n:\n\n\r\n19\r\nid: 1\ndata: b1:0:1:2:xx\n\n\r\n";
        let (body, done) = decode_all_splits(Framing::Chunked, input);
        assert_eq!(body, b":\n\nid: 1\ndata: b1:0:1:2:xx\n\n");
        assert!(!done);
    }

    #[test]
    fn chunked_stops_at_end_and_leaves_the_rest() {
        let mut d = BodyDecoder::new(Framing::Chunked);
        let input = b"2\r\nok\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
        let n = d.feed(input, &mut |_| {}).unwrap();
        assert!(d.is_done());
        assert_eq!(&input[n..], b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn chunked_rejects_garbage() {
        let mut d = BodyDecoder::new(Framing::Chunked);
        assert_eq!(d.feed(b"zz\r\n", &mut |_| {}), Err(BodyError::BadChunkSize));
        let mut d = BodyDecoder::new(Framing::Chunked);
        assert_eq!(
            d.feed(b"1\r\nab", &mut |_| {}),
            Err(BodyError::MissingChunkCrlf)
        );
        let mut d = BodyDecoder::new(Framing::Chunked);
        assert_eq!(
            d.feed(b"fffffffffffffffff\r\n", &mut |_| {}),
            Err(BodyError::ChunkTooLarge)
        );
    }

    #[test]
    fn fixed_length_and_until_close() {
        assert_eq!(
            decode_all_splits(Framing::Length(3), b"abc"),
            (b"abc".to_vec(), true)
        );
        let mut d = BodyDecoder::new(Framing::Length(2));
        assert_eq!(d.feed(b"abcd", &mut |_| {}), Ok(2));
        assert!(BodyDecoder::new(Framing::Length(0)).is_done());
        assert_eq!(
            decode_all_splits(Framing::UntilClose, b"data: x\n\n"),
            (b"data: x\n\n".to_vec(), false)
        );
    }
}
