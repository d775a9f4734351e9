//! The accepted update as the engine holds it: stamped, encoded once, shared.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use hubbub_proto::{Update, encode_frame};

/// An accepted update: stamped, encoded once, shared by history and every queue.
#[derive(Debug)]
pub struct Published {
    /// Position in the hub-wide sequence (starts at 1).
    pub seq: u64,
    pub id: Arc<str>,
    pub update: Update,
    /// The SSE frame, encoded once.
    pub frame: Bytes,
    pub at: Instant,
}

impl Published {
    pub fn new(seq: u64, update: Update, at: Instant) -> Self {
        let frame = encode_frame(&update);
        Self {
            seq,
            id: update.id.as_str().into(),
            update,
            frame,
            at,
        }
    }
}
