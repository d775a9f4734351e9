//! The request-head reader's end-of-head test (`hubbub_server::fuzzing::head_ends`), called after
//! every read with only the new bytes to scan. The input is what the client sends; its first byte
//! picks read sizes (1-16 bytes, cycling through the input). Besides not panicking: the head is
//! found complete after exactly the read that first completes a blank line (`\n\n` or `\n\r\n`
//! anywhere in what was read), as a scan of everything read so far says, whatever the split.
#![no_main]

use hubbub_server::fuzzing::head_ends;
use libfuzzer_sys::fuzz_target;

fn complete(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

fuzz_target!(|input: &[u8]| {
    let Some((&sizes, wire)) = input.split_first() else {
        return;
    };
    let mut buf = Vec::new();
    let mut reads = 0;
    while buf.len() < wire.len() {
        let size = usize::from((sizes >> (reads % 4 * 2)) & 3) * 4 + 1 + reads % 4;
        let from = buf.len();
        buf.extend_from_slice(&wire[from..(from + size).min(wire.len())]);
        reads += 1;
        let ends = head_ends(&buf, from);
        assert_eq!(ends, complete(&buf), "after {reads} reads: {buf:?}");
        if ends {
            break; // the reader stops at the first complete head
        }
    }
});
