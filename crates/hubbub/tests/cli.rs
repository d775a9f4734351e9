//! The real binary as separate processes: `serve --dev` and its banner token,
//! the `publish`/`subscribe` commands, SIGHUP reload of a TOML config, SIGTERM
//! drain, and clear failures on bad configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hubbub_proto::decode::{Event, EventParser, Item};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, timeout};

const BIN: &str = env!("CARGO_BIN_EXE_hubbub");
const WAIT: Duration = Duration::from_secs(10);
const TOPIC: &str = "https://example.com/books/1";
const DEV_KEY: &str = hubbub_server::DEV_JWT_KEY;

/// `hubbub ARGS` with a clean environment (no `HUBBUB_*` from the caller).
fn hubbub(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("HUBBUB_") {
            cmd.env_remove(name);
        }
    }
    cmd
}

/// A running `hubbub serve`; its stderr is collected line by line.
struct Served {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `hubbub serve ARGS --listen 127.0.0.1:0` and waits for its `listening` line.
    async fn start(args: &[&str]) -> Self {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = hubbub(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the hubbub binary starts");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        tokio::spawn({
            let stderr = stderr.clone();
            async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    stderr.lock().expect("not poisoned").push(line);
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let found = stderr
                .lock()
                .expect("not poisoned")
                .iter()
                .find_map(|l| listening_addr(l));
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("hubbub serve exited with {status}: {}", lines_of(&stderr));
            }
            assert!(
                Instant::now() < deadline,
                "no `listening` line in time: {}",
                lines_of(&stderr)
            );
            sleep(Duration::from_millis(20)).await;
        };
        Self {
            child,
            addr,
            stderr,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/.well-known/mercure", self.addr)
    }

    fn stderr(&self) -> String {
        lines_of(&self.stderr)
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("still running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} {pid}");
    }

    async fn wait_exit(&mut self) -> ExitStatus {
        timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("hubbub did not exit in time: {}", self.stderr()))
            .expect("waiting on the child works")
    }

    async fn metric(&self, series: &str) -> Option<f64> {
        let url = format!("http://{}/metrics", self.addr);
        let text = client().get(url).send().await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
    }
}

fn lines_of(stderr: &Mutex<Vec<String>>) -> String {
    stderr.lock().expect("not poisoned").join("\n")
}

/// `... listening addr=127.0.0.1:PORT ...`, with or without ANSI colours.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    let plain = strip_ansi(line);
    if !plain.contains("listening") {
        return None;
    }
    let rest = &plain[plain.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

fn token(key: &str, mercure: serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(key.as_bytes()).expect("an HMAC key");
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "mercure": mercure }),
        &key,
    )
    .expect("signing works")
}

async fn publish(url: &str, token: &str, form: &[(&str, &str)]) -> (reqwest::StatusCode, String) {
    let response = timeout(
        WAIT,
        client().post(url).bearer_auth(token).form(form).send(),
    )
    .await
    .expect("the hub answers in time")
    .expect("the hub is reachable");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

/// A minimal SSE reader (the test kit is not a dependency of this crate).
struct Sse {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    parser: EventParser,
    items: std::collections::VecDeque<Item>,
    /// `Some(clean)` once the body has ended.
    ended: Option<bool>,
}

impl Sse {
    async fn open(url: &str, token: Option<&str>) -> Self {
        let mut request = client().get(format!("{url}?topic={}", TOPIC.replace(':', "%3A")));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = timeout(WAIT, request.send())
            .await
            .expect("subscribed in time")
            .expect("the hub is reachable");
        assert_eq!(response.status(), reqwest::StatusCode::OK, "subscribe");
        Self {
            body: Box::pin(response.bytes_stream()),
            parser: EventParser::new(),
            items: Default::default(),
            ended: None,
        }
    }

    async fn next_item(&mut self, deadline: Instant) -> Option<Item> {
        loop {
            if let Some(item) = self.items.pop_front() {
                return Some(item);
            }
            if self.ended.is_some() {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return None,
                Ok(None) => self.ended = Some(true),
                Ok(Some(Err(_))) => self.ended = Some(false),
                Ok(Some(Ok(chunk))) => self.items.extend(self.parser.feed(&chunk)),
            }
        }
    }

    async fn expect_event(&mut self) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next_item(deadline).await {
                Some(Item::Event(e)) => return e,
                Some(Item::Comment(_)) => {}
                None => panic!("no event in time; ended: {:?}", self.ended),
            }
        }
    }

    /// Waits for the end of the stream; true when it ended cleanly.
    async fn expect_end(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while self.next_item(deadline).await.is_some() {}
        self.ended.expect("the stream ended in time")
    }
}

/// A file under the temp dir, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let name = format!("hubbub-cli-{}-{name}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, contents).expect("the temp file is written");
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    fn write(&self, contents: &str) {
        std::fs::write(&self.0, contents).expect("the temp file is rewritten");
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Polls `check` until it holds (for effects of a signal, which has no reply).
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dev_mode_says_so_and_prints_a_working_token() {
    let hub = Served::start(&["--dev"]).await;
    let stderr = hub.stderr();
    assert!(stderr.contains("DEVELOPMENT"), "{stderr}");
    assert!(
        stderr.contains(DEV_KEY),
        "the banner names the key: {stderr}"
    );
    let banner_token = stderr
        .lines()
        .skip_while(|l| !l.contains("publisher token"))
        .nth(1)
        .map(str::trim)
        .expect("the banner has a token line")
        .to_owned();

    // Anonymous subscribers are allowed in dev mode, private updates need the token.
    let mut anonymous = Sse::open(&hub.url(), None).await;
    let mut with_token = Sse::open(&hub.url(), Some(&banner_token)).await;
    let form = [("topic", TOPIC), ("id", "secret"), ("private", "on")];
    let (status, body) = publish(&hub.url(), &banner_token, &form).await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body, "secret");
    assert_eq!(
        with_token.expect_event().await.id.as_deref(),
        Some("secret")
    );
    let (status, _) = publish(
        &hub.url(),
        &banner_token,
        &[("topic", TOPIC), ("id", "pub")],
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(
        anonymous.expect_event().await.id.as_deref(),
        Some("pub"),
        "the private update skipped the anonymous subscriber"
    );
}

#[tokio::test]
async fn publish_and_subscribe_commands_round_trip() {
    let hub = Served::start(&["--dev"]).await;
    let url = hub.url();
    let run_publish = |extra: &[&str]| {
        let mut args = vec!["publish", "--hub", &url, "--topic", TOPIC];
        args.extend_from_slice(extra);
        let mut cmd = hubbub(&args);
        async move {
            timeout(WAIT, cmd.output())
                .await
                .expect("publish finishes in time")
                .expect("publish runs")
        }
    };

    let out = run_publish(&["--data", "hello", "--id", "first"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "first");

    // `earliest` replays "first", so the subscriber cannot miss it however late it connects.
    let mut sub = hubbub(&[
        "subscribe",
        "--hub",
        &url,
        "--topic",
        TOPIC,
        "--last-event-id",
        "earliest",
        "--json",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("subscribe starts");
    let mut lines = BufReader::new(sub.stdout.take().expect("piped stdout")).lines();
    let mut next_json = async || -> serde_json::Value {
        let line = timeout(WAIT, lines.next_line())
            .await
            .expect("subscribe prints in time")
            .expect("stdout is readable")
            .expect("subscribe is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    let first = next_json().await;
    assert_eq!(
        (first["id"].as_str(), first["data"].as_str()),
        (Some("first"), Some("hello"))
    );

    // Now it is connected: the rest arrive live.
    let out = run_publish(&["--data", "two\nlines", "--type", "greet", "--id", "second"]).await;
    assert!(out.status.success());
    let out = run_publish(&["--private", "--id", "secret"]).await;
    assert!(out.status.success());
    let out = run_publish(&["--id", "third"]).await;
    assert!(out.status.success());

    let second = next_json().await;
    assert_eq!(second["id"], "second");
    assert_eq!(second["type"], "greet");
    assert_eq!(second["data"], "two\nlines");
    let third = next_json().await;
    assert_eq!(
        third["id"], "third",
        "the private update is not shown without a token"
    );

    let refused = run_publish(&["--jwt-key", "not-the-key", "--id", "nope"]).await;
    assert!(
        !refused.status.success(),
        "a refused publish fails the command"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("401"), "{err}");
    sub.kill().await.expect("the subscriber stops");
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_keeps_streams() {
    let config = TempFile::new(
        "reload.toml",
        "jwt_key = \"first-key\"\nanonymous = true\nmax_topics = 1\n",
    );
    let hub = Served::start(&["--config", config.path()]).await;
    let mut stream = Sse::open(&hub.url(), None).await;
    let two_topics = [
        ("topic", TOPIC),
        ("topic", "https://example.com/x"),
        ("id", "after"),
    ];
    let (status, _) = publish(
        &hub.url(),
        &token("first-key", serde_json::json!({"publish": ["*"]})),
        &two_topics,
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "max_topics = 1");

    config.write("jwt_key = \"second-key\"\nanonymous = true\nmax_topics = 5\n");
    hub.signal("HUP");
    let second = token("second-key", serde_json::json!({"publish": ["*"]}));
    eventually("the new key and max_topics apply", || async {
        publish(&hub.url(), &second, &two_topics).await.0 == reqwest::StatusCode::OK
    })
    .await;
    let first = token("first-key", serde_json::json!({"publish": ["*"]}));
    let (status, _) = publish(&hub.url(), &first, &[("topic", TOPIC)]).await;
    assert_eq!(
        status,
        reqwest::StatusCode::UNAUTHORIZED,
        "the old key is gone"
    );
    assert_eq!(
        stream.expect_event().await.id.as_deref(),
        Some("after"),
        "the stream opened before the reload survives it"
    );
    assert_eq!(
        hub.metric("hubbub_config_reloads_total{result=\"ok\"}")
            .await,
        Some(1.0)
    );

    // A broken file is refused and the running configuration stays.
    config.write("jwt_key = \"third-key\"\nbogus_key = 1\n");
    hub.signal("HUP");
    eventually("the failed reload is counted", || async {
        hub.metric("hubbub_config_reloads_total{result=\"error\"}")
            .await
            == Some(1.0)
    })
    .await;
    let (status, _) = publish(&hub.url(), &second, &[("topic", TOPIC), ("id", "still")]).await;
    assert_eq!(
        status,
        reqwest::StatusCode::OK,
        "the previous settings stay"
    );
    assert_eq!(stream.expect_event().await.id.as_deref(), Some("still"));
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits_zero() {
    let mut hub = Served::start(&["--dev", "--shutdown-grace", "5s"]).await;
    let mut stream = Sse::open(&hub.url(), None).await;
    let (status, _) = publish(
        &hub.url(),
        &token(DEV_KEY, serde_json::json!({"publish": ["*"]})),
        &[("topic", TOPIC), ("id", "before")],
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(stream.expect_event().await.id.as_deref(), Some("before"));

    hub.signal("TERM");
    assert!(stream.expect_end().await, "the stream ends cleanly");
    let status = hub.wait_exit().await;
    assert!(status.success(), "exit status {status}: {}", hub.stderr());
    assert!(
        tokio::net::TcpStream::connect(hub.addr).await.is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn an_unknown_config_key_is_a_clear_error() {
    let config = TempFile::new("unknown.toml", "jwt_key = \"k\"\nbogus_key = 1\n");
    let path = config.path();
    let out = timeout(WAIT, hubbub(&["serve", "--config", path]).output())
        .await
        .expect("hubbub exits in time")
        .expect("hubbub runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus_key"), "names the key: {err}");
    assert!(err.contains(path), "names the file: {err}");
}

#[tokio::test]
async fn serving_without_a_key_outside_dev_mode_fails() {
    let out = timeout(WAIT, hubbub(&["serve", "--listen", "127.0.0.1:0"]).output())
        .await
        .expect("hubbub exits in time")
        .expect("hubbub runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no JWT key"), "{err}");
}
