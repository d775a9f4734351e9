//! `hubbub_cluster::Preamble::decode` on arbitrary bytes: the clear-text first frame of a relay
//! link, read from anyone before the Noise handshake authenticates them. Besides not panicking:
//! the bytes it accepts are exactly the encoding of what it returns (one encoding per preamble),
//! so two peers that agree on the bytes agree on the claim hashed into the handshake prologue.
#![no_main]

use hubbub_cluster::Preamble;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Ok(preamble) = Preamble::decode(frame) {
        assert_eq!(&preamble.encode()[..], frame, "{preamble:?}");
    }
});
