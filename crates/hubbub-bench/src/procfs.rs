//! RSS and CPU time of a process, read from `/proc` (Linux only; elsewhere `None`).

use serde::{Deserialize, Serialize};

/// The kernel reports `/proc/PID/stat` times in USER_HZ ticks, which Linux fixes at
/// 100 on every architecture for ABI stability (not the kernel's internal HZ).
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// utime + stime.
    pub cpu_seconds: f64,
}

/// Samples `pid`, or this process when `None`.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    Some(ProcSample {
        rss_bytes: parse_vm_rss(&status)?,
        cpu_seconds: parse_cpu_seconds(&stat)?,
    })
}

/// Sum over `pids` (e.g. nginx master + worker); `None` if any is gone or none given.
pub fn sample_sum(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().try_fold(ProcSample::default(), |acc, pid| {
        let s = sample(Some(*pid))?;
        Some(ProcSample {
            rss_bytes: acc.rss_bytes + s.rss_bytes,
            cpu_seconds: acc.cpu_seconds + s.cpu_seconds,
        })
    })
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name, field 3 (state) is index 0, so utime (14) and stime (15) are 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        let status = "Name:\tx\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads: 1\n";
        assert_eq!(parse_vm_rss(status), Some(12345 * 1024));
        let stat =
            "42 (we ird) (name)) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 1 0 5 1000 200";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("garbage"), None);
    }

    #[test]
    fn samples_self() {
        if cfg!(target_os = "linux") {
            let s = sample(None).unwrap();
            assert!(s.rss_bytes > 0);
            assert_eq!(
                sample_sum(&[std::process::id()]).map(|s| s.rss_bytes > 0),
                Some(true)
            );
        }
        assert_eq!(sample_sum(&[]), None);
    }
}
