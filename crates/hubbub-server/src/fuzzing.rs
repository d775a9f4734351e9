//! Entry points for the fuzz targets in `fuzz/` (not an API: hidden, may change). Thin wrappers
//! over private parsers, with their behaviour unchanged; errors are flattened to public types.
//! JWT claims need nothing here: [`crate::auth::Auth`] is public.
#![doc(hidden)]

use hubbub_proto::Update;

/// The publish form parser (`POST` body): the update, or the HTTP status and message it answers.
pub fn parse_form(body: &[u8], max_topics: usize) -> Result<Update, (u16, String)> {
    crate::publish::parse_form(body, max_topics).map_err(|e| (e.status().as_u16(), e.message))
}

/// Whether `buf` holds the blank line ending a request head, scanning from `from` on (the request
/// head reader calls it after every read, `from` being where the read's bytes start).
pub fn head_ends(buf: &[u8], from: usize) -> bool {
    crate::conn::head_ends(buf, from)
}
