//! Measurements around the workloads: percentiles, the fdatasync floor, CPU time, peak
//! memory and store size. Linux-specific where it reads `/proc`; elsewhere those figures
//! read as unknown.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// What one workload measured.
pub struct Outcome {
    /// Orchestration instances.
    pub instances: u64,
    /// Activity executions the workload needs.
    pub activities: u64,
    /// The timed span.
    pub wall: Duration,
    /// Latency samples in milliseconds, for p50/p99.
    pub samples_ms: Option<Vec<f64>>,
    /// How it was measured and verified.
    pub notes: Vec<String>,
}

/// Nearest-rank p50 and p99 of `samples`.
pub fn p50_p99(samples: &[f64]) -> (f64, f64) {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    (percentile(&sorted, 50.0), percentile(&sorted, 99.0))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 of `write(64 bytes) + fdatasync` on a file in `dir`: the floor under the latency of
/// one durable step on this disk, measured in the same run.
pub fn fdatasync_floor(dir: &Path) -> Option<f64> {
    let path = dir.join("fdatasync-probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .ok()?;
    let mut samples = Vec::with_capacity(500);
    for _ in 0..500 {
        let started = Instant::now();
        file.write_all(&[7u8; 64]).ok()?;
        file.sync_data().ok()?;
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let _ = std::fs::remove_file(&path);
    Some(p50_p99(&samples).0)
}

/// Resets the kernel's peak-RSS counter of this process, so the next reading covers only
/// what follows.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", b"5");
}

/// Peak resident memory since the last reset, in MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// [`peak_rss_mib`] for a note.
pub fn peak_rss_text() -> String {
    peak_rss_mib().map_or("?".to_owned(), |mib| format!("{mib:.0} MiB"))
}

/// CPU seconds (user and system) this process has used.
pub fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat, in clock ticks of 1/100 s (USER_HZ on Linux).
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    let Some(after_name) = stat.rsplit_once(')').map(|(_, rest)| rest) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |index: usize| fields.get(index).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// Bytes of all files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_size(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Cores available to this process.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
