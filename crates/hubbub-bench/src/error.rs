//! The errors `run` returns.

use std::path::PathBuf;

use crate::report::Report;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid options: {0}")]
    Config(String),
    #[error("bad URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, #[source] std::io::Error),
    #[error("refusing to load {0}: not a loopback address (pass --allow-remote if you mean it)")]
    NotLoopback(String),
    #[error("minting the publisher token: {0}")]
    Token(#[from] hubbub_proto::token::TokenError),
    #[error("starting worker process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("worker {index}: {reason}")]
    Worker { index: u32, reason: String },
    #[error("writing {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path}: {source}")]
    Input {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a bench JSON report: {source}")]
    BadReport {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("drawing {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// `--fail-on-loss` checks failed; the full report is still attached.
    #[error("bench failed: {}", .reasons.join("; "))]
    Failed {
        reasons: Vec<String>,
        report: Box<Report>,
    },
}
