//! The real binary as separate processes: `serve --dev` and its banner tokens
//! (Mercure 1.0 and 0.x), the `publish`/`subscribe` commands in both protocol
//! generations, SIGHUP reload of a TOML config, SIGTERM drain, and clear
//! failures on bad configuration.

use std::path::PathBuf;
use std::process::Stdio;

use hubbub_testkit::process::{command, run};
use hubbub_testkit::{
    HubProcess, SseClient, StatusCode, WAIT, client, encode_form, eventually, publish, publisher,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::timeout;

const BIN: &str = env!("CARGO_BIN_EXE_hubbub");
const TOPIC: &str = "https://example.com/books/1";
const DEV_KEY: &str = hubbub_server::DEV_JWT_KEY;

/// `hubbub serve ARGS` on an ephemeral port, once it is listening.
async fn serve(args: &[&str]) -> HubProcess {
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    HubProcess::serve(BIN, &all).await
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

/// The line after the banner line containing `label`, trimmed.
fn banner_line_after(stderr: &str, label: &str) -> String {
    stderr
        .lines()
        .skip_while(|l| !l.contains(label))
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("the banner has a line after {label:?}: {stderr}"))
        .to_owned()
}

/// A 1.0 subscription (`match=`) to `topic` on `hub_url`, the token as a
/// bearer, `Host` overridden when `host` is given; any status.
async fn subscribe_v1(hub_url: &str, topic: &str, token: &str, host: Option<&str>) -> SseClient {
    let url = format!("{hub_url}?{}", encode_form(&[("match", topic)]));
    let mut request = client().get(url).bearer_auth(token);
    if let Some(host) = host {
        request = request.header("host", host);
    }
    SseClient::connect(request).await
}

#[tokio::test]
async fn dev_mode_says_so_and_prints_working_tokens_of_both_generations() {
    let hub = serve(&["--dev"]).await;
    let stderr = hub.stderr();
    assert!(stderr.contains("DEVELOPMENT"), "{stderr}");
    assert!(
        stderr.contains(DEV_KEY),
        "the banner names the key: {stderr}"
    );
    let access_token = banner_line_after(&stderr, "Mercure 1.0 access token");
    let legacy_token = banner_line_after(&stderr, "Mercure 0.x token");
    assert_ne!(access_token, legacy_token);
    let url = hub.url();
    let port = hub.addr.port();
    assert!(
        stderr.contains(&format!("curl -N '{url}?match=https://example.com/demo'")),
        "1.0 curl examples: {stderr}"
    );
    assert!(
        stderr.contains(&format!("curl -N '{url}?topic=https://example.com/demo'")),
        "0.x curl example: {stderr}"
    );

    // The 1.0 token: accepted whether the hub is named 127.0.0.1 or localhost
    // (its `aud` lists both), refused for another name.
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}")] {
        let sse = subscribe_v1(&url, TOPIC, &access_token, Some(&host)).await;
        assert_eq!(sse.status, StatusCode::OK, "Host {host}");
    }
    let elsewhere = format!("elsewhere.test:{port}");
    let sse = subscribe_v1(&url, TOPIC, &access_token, Some(&elsewhere)).await;
    assert_eq!(sse.status, StatusCode::UNAUTHORIZED, "not its audience");

    // Anonymous subscribers are allowed in dev mode, private updates need a token:
    // each generation's token subscribes and publishes.
    let mut anonymous = SseClient::subscribe(&url, &[TOPIC], None).await;
    let mut with_access = subscribe_v1(&url, TOPIC, &access_token, None).await;
    assert_eq!(with_access.status, StatusCode::OK);
    let mut with_legacy = SseClient::subscribe(&url, &[TOPIC], Some(&legacy_token)).await;
    for (token, id) in [(&access_token, "secret-1.0"), (&legacy_token, "secret-0.x")] {
        let form = [("topic", TOPIC), ("id", id), ("private", "on")];
        let r = publish(&url, token, &form).await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.body);
        assert_eq!(r.body, id);
    }
    for sub in [&mut with_access, &mut with_legacy] {
        assert_eq!(sub.ids(2).await, ["secret-1.0", "secret-0.x"]);
    }
    let r = publish(&url, &access_token, &[("topic", TOPIC), ("id", "pub")]).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        anonymous.expect_event().await.id.as_deref(),
        Some("pub"),
        "the private updates skipped the anonymous subscriber"
    );
}

/// `hubbub publish`/`subscribe` speaking `protocol` against a `serve --dev`
/// process: minted tokens (private updates reach the default subscriber, not
/// an `--anonymous` one), exact and pattern selectors of that generation, a
/// refused token failing the command.
async fn commands_round_trip(protocol: &str, pattern_flag: &str, pattern: &str) {
    let hub = serve(&["--dev"]).await;
    let url = hub.url();
    let exact_flag = if protocol == "1.0" {
        "--match"
    } else {
        "--topic"
    };
    let run_publish = async |extra: &[&str]| {
        let mut args = vec!["publish", "--hub", &url, "--protocol", protocol];
        args.extend_from_slice(&["--topic", TOPIC]);
        args.extend_from_slice(extra);
        run(BIN, &args).await
    };

    let out = run_publish(&["--data", "hello", "--id", "first"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "first");

    // `earliest` replays "first", so a subscriber cannot miss it however late it connects.
    let spawn = |selector: [&str; 2], extra: &[&str]| {
        let mut args = vec!["subscribe", "--hub", &url, "--protocol", protocol];
        args.extend_from_slice(&selector);
        args.extend_from_slice(&["--last-event-id", "earliest", "--json"]);
        args.extend_from_slice(extra);
        let mut child = command(BIN, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("subscribe starts");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        (child, lines)
    };
    let (mut authorized, mut authorized_lines) = spawn([exact_flag, TOPIC], &[]);
    let (mut anonymous, mut anonymous_lines) = spawn([pattern_flag, pattern], &["--anonymous"]);
    let next_json = async |lines: &mut tokio::io::Lines<_>| -> serde_json::Value {
        let line = timeout(WAIT, lines.next_line())
            .await
            .expect("subscribe prints in time")
            .expect("stdout is readable")
            .expect("subscribe is still running");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    for lines in [&mut authorized_lines, &mut anonymous_lines] {
        let first = next_json(lines).await;
        assert_eq!(
            (first["id"].as_str(), first["data"].as_str()),
            (Some("first"), Some("hello"))
        );
    }

    // Now both are connected: the rest arrive live.
    let out = run_publish(&["--data", "two\nlines", "--type", "greet", "--id", "second"]).await;
    assert!(out.status.success());
    let out = run_publish(&["--private", "--id", "secret"]).await;
    assert!(out.status.success());
    let out = run_publish(&["--id", "third"]).await;
    assert!(out.status.success());

    for lines in [&mut authorized_lines, &mut anonymous_lines] {
        let second = next_json(lines).await;
        assert_eq!(second["id"], "second");
        assert_eq!(second["type"], "greet");
        assert_eq!(second["data"], "two\nlines");
    }
    assert_eq!(
        next_json(&mut authorized_lines).await["id"],
        "secret",
        "the minted subscriber token covers private updates"
    );
    for lines in [&mut authorized_lines, &mut anonymous_lines] {
        assert_eq!(
            next_json(lines).await["id"],
            "third",
            "the private update is not shown to --anonymous"
        );
    }

    let refused = run_publish(&["--jwt-key", "not-the-key", "--id", "nope"]).await;
    assert!(
        !refused.status.success(),
        "a refused publish fails the command"
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("401"), "{err}");
    authorized.kill().await.expect("the subscriber stops");
    anonymous.kill().await.expect("the subscriber stops");
}

#[tokio::test]
async fn publish_and_subscribe_commands_round_trip_in_mercure_1_0() {
    commands_round_trip("1.0", "--match-urlpattern", "https://example.com/books/:id").await;
}

#[tokio::test]
async fn publish_and_subscribe_commands_round_trip_in_mercure_0x() {
    commands_round_trip("0.x", "--topic", "https://example.com/books/{id}").await;
}

/// `hubbub subscribe --presence --json` speaking `protocol` against `serve
/// --dev` (which tracks active subscriptions): another `subscribe` command's
/// subscription shows up (in the list or as it arrives) and is removed once
/// that command is killed.
async fn presence_follows_a_subscriber(protocol: &str, selector_flag: &str, field: &str) {
    let hub = serve(&["--dev"]).await;
    let url = hub.url();
    let subscribe = |extra: &[&str]| {
        let mut args = vec!["subscribe", "--hub", &url, "--protocol", protocol, "--json"];
        args.extend_from_slice(extra);
        command(BIN, &args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("subscribe starts")
    };
    let mut other = subscribe(&[selector_flag, TOPIC]);
    let mut presence = subscribe(&["--presence"]);
    let mut lines = BufReader::new(presence.stdout.take().expect("piped stdout")).lines();
    let mut stderr = presence.stderr.take().expect("piped stderr");
    let mut next_json = async || -> serde_json::Value {
        let line = timeout(WAIT, lines.next_line())
            .await
            .expect("--presence prints in time")
            .expect("stdout is readable");
        let Some(line) = line else {
            let mut err = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await;
            panic!("--presence ended: {err}");
        };
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    };
    let id = loop {
        let line = next_json().await;
        let doc = &line["subscription"];
        if doc[field] == TOPIC {
            assert!(
                line["change"] == "present" || line["change"] == "added",
                "{line}"
            );
            assert_eq!(doc["active"], true, "{line}");
            break doc["id"].clone();
        }
    };
    other.kill().await.expect("the other subscriber stops");
    loop {
        let line = next_json().await;
        if line["subscription"]["id"] == id {
            assert_eq!(line["change"], "removed", "{line}");
            assert_eq!(line["subscription"]["active"], false, "{line}");
            break;
        }
    }
    presence.kill().await.expect("--presence stops");
}

#[tokio::test]
async fn subscribe_presence_follows_subscribers_in_mercure_1_0() {
    presence_follows_a_subscriber("1.0", "--match", "match").await;
}

#[tokio::test]
async fn subscribe_presence_follows_subscribers_in_mercure_0x() {
    presence_follows_a_subscriber("0.x", "--topic", "topic").await;
}

#[tokio::test]
async fn the_cli_mints_1_0_tokens_for_the_hub_it_is_given() {
    let hub = serve(&["--dev"]).await;
    let url = hub.url();
    let publish_with = async |extra: &[&str]| {
        let mut args = vec!["publish", "--hub", &url, "--topic", TOPIC];
        args.extend_from_slice(extra);
        run(BIN, &args).await
    };
    // No --protocol: a 1.0 token from the dev issuer, for this hub.
    assert!(publish_with(&[]).await.status.success());
    let localhost = format!("http://localhost:{}/.well-known/mercure", hub.addr.port());
    for (extra, why) in [
        (
            &["--issuer", "https://unknown.invalid"][..],
            "an untrusted issuer",
        ),
        (
            &["--audience", "https://other.invalid/hub"][..],
            "another hub's audience",
        ),
        (
            &["--audience", localhost.as_str()][..],
            "another name of this hub",
        ),
    ] {
        let out = publish_with(extra).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("401"), "{why}: {err}");
    }
    let out = publish_with(&["--audience", &url]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The 0.x form of subscribing is refused in 1.0, and the other way round.
    let out = run(BIN, &["subscribe", "--hub", &url, "--topic", TOPIC]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--protocol 0.x"),
        "{err}"
    );
    let args = [
        "subscribe",
        "--hub",
        &url,
        "--protocol",
        "0.x",
        "--match",
        TOPIC,
    ];
    let out = run(BIN, &args).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--topic"), "{err}");
}

#[tokio::test]
async fn sighup_reloads_the_config_file_and_keeps_streams() {
    let config = TempFile::new(
        "reload.toml",
        "compat_0x = true\njwt_key = \"first-key\"\nanonymous = true\nmax_topics = 1\n",
    );
    let hub = serve(&["--config", config.path()]).await;
    let mut stream = SseClient::subscribe(&hub.url(), &[TOPIC], None).await;
    let two_topics = [
        ("topic", TOPIC),
        ("topic", "https://example.com/x"),
        ("id", "after"),
    ];
    let status = publish(&hub.url(), &publisher("first-key"), &two_topics)
        .await
        .status;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "max_topics = 1");

    config.write("compat_0x = true\njwt_key = \"second-key\"\nanonymous = true\nmax_topics = 5\n");
    hub.signal("HUP");
    let second = publisher("second-key");
    eventually(WAIT, "the new key and max_topics apply", || async {
        let r = publish(&hub.url(), &second, &two_topics).await;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    let first = publisher("first-key");
    let status = publish(&hub.url(), &first, &[("topic", TOPIC)])
        .await
        .status;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old key is gone");
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
    config.write("compat_0x = true\njwt_key = \"third-key\"\nbogus_key = 1\n");
    hub.signal("HUP");
    eventually(WAIT, "the failed reload is counted", || async {
        let failed = hub.metric("hubbub_config_reloads_total{result=\"error\"}");
        (failed.await == Some(1.0)).then_some(())
    })
    .await;
    let status = publish(&hub.url(), &second, &[("topic", TOPIC), ("id", "still")])
        .await
        .status;
    assert_eq!(status, StatusCode::OK, "the previous settings stay");
    assert_eq!(stream.expect_event().await.id.as_deref(), Some("still"));
}

/// Flags beat `HUBBUB_*` variables, which beat the file, which beats the
/// defaults; a reload lays flags and variables over the re-read file again.
#[tokio::test]
async fn flags_beat_variables_beat_the_file_beat_defaults_across_reloads() {
    let config = TempFile::new(
        "precedence.toml",
        "compat_0x = true\njwt_key = \"file-key\"\nmax_topics = 1\nanonymous = true\n",
    );
    let env = [
        ("HUBBUB_JWT_KEY", "env-key"),
        ("HUBBUB_MAX_TOPICS", "2"),
        ("HUBBUB_ANONYMOUS", "false"),
    ];
    let args = ["--listen", "127.0.0.1:0", "--config", config.path()];
    let args = [&args[..], &["--jwt-key", "flag-key"]].concat();
    let hub = HubProcess::serve_with_env(BIN, &args, &env).await;
    // Each publish below names its key and topic count: which layer won shows.
    let topics = |n: usize| -> Vec<(&str, String)> {
        (0..n)
            .map(|i| ("topic", format!("https://example.com/{i}")))
            .collect()
    };
    let check = async || {
        let publish_n = async |key: &str, n: usize| {
            let form = topics(n);
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            publish(&hub.url(), &publisher(key), &form).await.status
        };
        assert_eq!(
            publish_n("flag-key", 2).await,
            StatusCode::OK,
            "flag key, env max_topics"
        );
        assert_eq!(
            publish_n("flag-key", 3).await,
            StatusCode::PAYLOAD_TOO_LARGE,
            "env max_topics"
        );
        assert_eq!(
            publish_n("env-key", 1).await,
            StatusCode::UNAUTHORIZED,
            "the flag wins"
        );
        assert_eq!(publish_n("file-key", 1).await, StatusCode::UNAUTHORIZED);
        // A variable set to false does not switch off what the file switched on.
        // (`subscribe` asserts the 200.)
        SseClient::subscribe(&hub.url(), &[TOPIC], None).await;
    };
    check().await;
    config.write("compat_0x = true\njwt_key = \"file-key-2\"\nmax_topics = 5\nanonymous = true\n");
    hub.signal("HUP");
    eventually(WAIT, "the reload is counted", || async {
        let ok = hub.metric("hubbub_config_reloads_total{result=\"ok\"}");
        (ok.await == Some(1.0)).then_some(())
    })
    .await;
    check().await;
}

#[tokio::test]
async fn sigterm_ends_streams_and_exits_zero() {
    let mut hub = serve(&["--dev", "--shutdown-grace", "5s"]).await;
    let mut stream = SseClient::subscribe(&hub.url(), &[TOPIC], None).await;
    let status = publish(
        &hub.url(),
        &publisher(DEV_KEY),
        &[("topic", TOPIC), ("id", "before")],
    )
    .await
    .status;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stream.expect_event().await.id.as_deref(), Some("before"));

    hub.signal("TERM");
    assert!(
        stream.expect_end(WAIT).await.clean,
        "the stream ends cleanly"
    );
    let status = hub.wait_exit().await;
    assert!(status.success(), "exit status {status}: {}", hub.stderr());
    assert!(
        tokio::net::TcpStream::connect(hub.addr).await.is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn an_unknown_config_key_is_a_clear_error() {
    let config = TempFile::new(
        "unknown.toml",
        "compat_0x = true\njwt_key = \"k\"\nbogus_key = 1\n",
    );
    let path = config.path();
    let out = run(BIN, &["serve", "--config", path]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus_key"), "names the key: {err}");
    assert!(err.contains(path), "names the file: {err}");
}

#[tokio::test]
async fn serving_without_a_key_outside_dev_mode_fails() {
    let out = run(BIN, &["serve", "--listen", "127.0.0.1:0"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no trusted token issuer"), "{err}");
    // 0.x asked for, without its key.
    let out = run(BIN, &["serve", "--listen", "127.0.0.1:0", "--compat-0x"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no JWT key"), "{err}");
    // A 0.x key without compat_0x is refused rather than silently unused.
    let out = run(BIN, &["serve", "--listen", "127.0.0.1:0", "--jwt-key", "k"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("jwt_key is a Mercure 0.x setting"), "{err}");
}
