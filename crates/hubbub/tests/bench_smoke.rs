//! `hubbub bench` against a real hub (in this process, over real sockets): the
//! seconds-long smoke run that keeps the load tool working. The full comparison
//! with nchan is `bench/compare.sh`; figures are never asserted here.

use hubbub_server::Config;
use hubbub_testkit::TestHub;

const BIN: &str = env!("CARGO_BIN_EXE_hubbub");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_bench_run_delivers_everything_once() {
    let mut hub = TestHub::start(Config {
        dev: true,
        ..Config::default()
    })
    .await;
    let report_path =
        std::env::temp_dir().join(format!("hubbub-bench-smoke-{}.json", std::process::id()));
    let out = tokio::process::Command::new(BIN)
        .args([
            "bench",
            "--hub",
            &hub.url(),
            "--subscribers",
            "200",
            "--topics",
            "4",
            "--rate",
            "50",
        ])
        .args([
            "--duration",
            "3",
            "--warmup",
            "1",
            "--drain",
            "1",
            "--settle",
            "1",
            "--processes",
            "1",
        ])
        .args(["--fail-on-loss", "--quiet", "--json-out"])
        .arg(&report_path)
        .output()
        .await
        .expect("the bench runs");
    assert!(
        out.status.success(),
        "bench failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report_path).expect("the JSON report is written"))
            .expect("valid JSON");
    let _ = std::fs::remove_file(&report_path);
    let delivery = &report["delivery"];
    assert!(
        delivery["total"].as_u64().unwrap_or(0) > 0,
        "deliveries happened: {delivery}"
    );
    for counter in ["lost", "duplicated", "reordered"] {
        assert_eq!(delivery[counter].as_u64(), Some(0), "{counter}: {delivery}");
    }
    assert_eq!(
        report["connect"]["never_connected"].as_u64(),
        Some(0),
        "{}",
        report["connect"]
    );
    hub.shutdown().await.expect("the hub drains cleanly");
}
