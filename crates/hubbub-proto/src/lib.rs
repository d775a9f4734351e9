//! Mercure wire types shared by every other crate: what an update is, how it is
//! framed as Server-Sent Events, and how topic selectors match topics.
//!
//! Nothing here does I/O or knows about tokio, HTTP or gossip, so the rules of the
//! protocol can be tested as plain functions.

pub mod decode;
pub mod frame;
pub mod selector;
pub mod template;
pub mod text;
pub mod token;
pub mod update;
pub mod url_pattern;

pub use frame::{HEARTBEAT, OPEN_COMMENT, encode_frame};
pub use selector::{Selector, SelectorError};
pub use template::{TemplateError, UriTemplate};
pub use update::{Update, UpdateError};
