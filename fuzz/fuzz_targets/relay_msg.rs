//! `hubbub_cluster::wire::Msg::decode` on arbitrary bytes: every relay message a peer sends ends
//! here. Besides not panicking (nor allocating what the frame does not hold): every decoded message
//! re-encodes to at most the bytes it was decoded from, decodes back to itself, and that encoding
//! is canonical.
//!
//! The length-delimited framing in front of it (tokio-util's codec, capped before authentication)
//! is set up privately in the relay and is not reachable from the public API; the clear-text
//! first frame of a link has its own target, `relay_preamble`.
#![no_main]

use hubbub_cluster::wire::Msg;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let Ok(msg) = Msg::decode(frame) else {
        return;
    };
    let encoded = msg.encode();
    assert!(encoded.len() <= frame.len(), "{msg:?} grew on re-encoding");
    assert_eq!(Msg::decode(&encoded).as_ref(), Ok(&msg), "round trip");
    assert_eq!(
        Msg::decode(&encoded).unwrap().encode(),
        encoded,
        "not canonical"
    );
});
