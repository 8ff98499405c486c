//! `--table PEER.jsonl OURS.jsonl`: the side-by-side Markdown table of duroxide-bench and
//! durable-bench JSON lines that `compare.sh` writes. It lives in the bench binary, so a
//! machine with only the Rust toolchain can make it.
//!
//! For every workload it shows the figures that matter for it: the peer's, ours with fsync
//! durability, the ratio, and ours with buffered durability when those lines are present.
//! Ratios are oriented so that a number above 1 always means durable is better: ours ÷ peer
//! where higher is better (throughput), peer ÷ ours where lower is better (latency, wall
//! time). A second table lists peak RSS and CPU seconds from the notes.

use crate::WORKLOADS;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The peer harness's workloads; any other has no peer figure ("—").
const PEER_WORKLOADS: [&str; 7] = [
    "seq10-latency",
    "seq10-throughput",
    "fanout-1000",
    "fanout-10000",
    "long-history-5000",
    "timer-100ms",
    "event-roundtrip",
];

const NONE: &str = "—";

pub const USAGE: &str = "\
durable-bench --table: side-by-side Markdown table of JSON lines

USAGE:
    bench --table PEER.jsonl|- OURS.jsonl [--workload LIST] [--peer-timeout-s N]

    PEER.jsonl       duroxide-bench's lines, or - when the peer was not run
    OURS.jsonl       durable-bench's lines (fsync and, if present, buffered)
    --workload LIST  comma-separated subset, or all (default: every workload in the
                     files)
    --peer-timeout-s the peer's --timeout-s, to bound a workload it did not finish
                     (default: 300)
";

#[derive(Clone, Copy, PartialEq)]
enum Better {
    /// Throughput: ratio = ours ÷ peer.
    Higher,
    /// Latency, wall time, memory: ratio = peer ÷ ours.
    Lower,
    /// Shown side by side, not ranked.
    Unranked,
}

/// Where a figure comes from: a key of the line, or a number in its notes.
#[derive(Clone, Copy)]
enum Source {
    Key(&'static str),
    Note(fn(&str) -> Option<f64>),
}

#[derive(Clone, Copy)]
struct Metric {
    label: &'static str,
    source: Source,
    better: Better,
}

const fn metric(label: &'static str, key: &'static str, better: Better) -> Metric {
    Metric {
        label,
        source: Source::Key(key),
        better,
    }
}

const RATE: Metric = metric("activities/s", "activities_per_s", Better::Higher);
const WALL: Metric = metric("wall s", "wall_s", Better::Lower);
const P50: Metric = metric("p50 ms", "p50_ms", Better::Lower);
const P99: Metric = metric("p99 ms", "p99_ms", Better::Lower);

fn metrics(workload: &str) -> Vec<Metric> {
    let note = |label, read, better| Metric {
        label,
        source: Source::Note(read),
        better,
    };
    match workload {
        "seq10-latency" | "event-roundtrip" => vec![P50, P99],
        "seq10-throughput" | "fanout-1000" | "fanout-10000" => vec![RATE],
        "long-history-5000" => vec![
            WALL,
            note(
                "last ÷ first block of steps",
                block_growth,
                Better::Unranked,
            ),
        ],
        "timer-100ms" => vec![
            metric("lateness p50 ms", "p50_ms", Better::Lower),
            metric("lateness p99 ms", "p99_ms", Better::Lower),
        ],
        "recovery-10000" => vec![WALL],
        "idle-timers-100000" => vec![
            metric("wall s (the starts)", "wall_s", Better::Lower),
            note("peak RSS MiB", peak_rss, Better::Lower),
        ],
        "entity-counter" | "entity-counter-1000" => {
            vec![metric("operations/s", "activities_per_s", Better::Higher)]
        }
        "http-start" => vec![
            metric("starts/s", "orch_per_s", Better::Higher),
            note("status polls/s", status_polls, Better::Higher),
            metric("start p50 ms", "p50_ms", Better::Lower),
            metric("start p99 ms", "p99_ms", Better::Lower),
        ],
        _ => vec![RATE, WALL, P50, P99],
    }
}

struct Args {
    peer: Option<PathBuf>,
    ours: PathBuf,
    workloads: Option<Vec<String>>,
    peer_timeout_s: f64,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut files = Vec::new();
    let mut workloads = None;
    let mut peer_timeout_s = 300.0;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workload" | "-w" => {
                let list = args.next().ok_or("--workload needs a value")?;
                workloads =
                    (list != "all").then(|| list.split(',').map(|w| w.trim().to_owned()).collect());
            }
            "--peer-timeout-s" => {
                let value = args.next().ok_or("--peer-timeout-s needs a value")?;
                peer_timeout_s = value
                    .parse()
                    .map_err(|_| format!("--peer-timeout-s: `{value}` is not a number"))?;
            }
            "-h" | "--help" => return Err(String::new()),
            file => files.push(file.to_owned()),
        }
    }
    let [peer, ours] = <[String; 2]>::try_from(files)
        .map_err(|files| format!("expected PEER.jsonl and OURS.jsonl, got {files:?}"))?;
    Ok(Args {
        peer: (peer != "-").then(|| PathBuf::from(peer)),
        ours: PathBuf::from(ours),
        workloads,
        peer_timeout_s,
    })
}

/// `bench --table ...`: prints the table; 64 on a usage error, 1 on an unreadable file.
pub fn main(args: &[String]) -> ExitCode {
    let args = match parse(args) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("{error}\n\n{USAGE}");
            return ExitCode::from(if error.is_empty() { 0 } else { 64 });
        }
    };
    let ours = match load(&args.ours) {
        Ok(lines) => lines,
        Err(error) => return fail(&error),
    };
    let peer = match args.peer.as_ref().map(load).transpose() {
        Ok(lines) => lines,
        Err(error) => return fail(&error),
    };
    print!("{}", render(&args, &ours, peer.as_ref()));
    ExitCode::SUCCESS
}

fn fail(error: &str) -> ExitCode {
    eprintln!("durable-bench --table: {error}");
    ExitCode::from(1)
}

/// `(workload, store) -> line`; a later line for the same pair wins.
type Lines = BTreeMap<(String, String), Value>;

fn load(path: &PathBuf) -> Result<Lines, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let mut lines = Lines::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .map_err(|error| format!("{}:{}: not JSON: {error}", path.display(), number + 1))?;
        let field = |name| value.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(workload), Some(store)) = (field("workload"), field("store")) else {
            return Err(format!(
                "{}:{}: no workload or store",
                path.display(),
                number + 1
            ));
        };
        lines.insert((workload, store), value);
    }
    Ok(lines)
}

fn line<'a>(lines: &'a Lines, workload: &str, store: Option<&str>) -> Option<&'a Value> {
    lines
        .iter()
        .find(|((w, s), _)| w == workload && store.is_none_or(|store| s == store))
        .map(|(_, line)| line)
}

fn notes(line: &Value) -> &str {
    line.get("notes").and_then(Value::as_str).unwrap_or("")
}

/// `None` when the line carries figures, else why not.
fn state(line: &Value) -> Option<&'static str> {
    let notes = notes(line);
    if notes.starts_with("SKIPPED") {
        Some("timeout")
    } else if notes.starts_with("FAILED") {
        Some("FAILED")
    } else {
        None
    }
}

fn value(line: &Value, source: Source) -> Option<f64> {
    match source {
        Source::Key(key) => line.get(key).and_then(Value::as_f64),
        Source::Note(read) => read(notes(line)),
    }
}

/// The number right after `prefix` in `text`.
fn number_after(text: &str, prefix: &str) -> Option<f64> {
    let rest = &text[text.find(prefix)? + prefix.len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn peak_rss(notes: &str) -> Option<f64> {
    number_after(notes, "peak RSS ")
}

fn cpu_seconds(notes: &str) -> Option<f64> {
    number_after(notes, "process cpu ")
}

fn status_polls(notes: &str) -> Option<f64> {
    number_after(notes, "status polls/s ")
}

fn fdatasync_floor(notes: &str) -> Option<f64> {
    number_after(notes, "fdatasync floor p50 ")
}

/// Last block of steps ÷ first, from "ms per successive block of N steps: [a, b, ...]",
/// which both harnesses write.
fn block_growth(notes: &str) -> Option<f64> {
    let list = &notes[notes.find("ms per successive block of")?..];
    let list = &list[list.find('[')? + 1..list.find(']')?];
    let blocks: Vec<f64> = list
        .split(',')
        .map(|block| block.trim().parse().ok())
        .collect::<Option<_>>()?;
    match (blocks.first(), blocks.last()) {
        (Some(first), Some(last)) if *first > 0.0 => Some(last / first),
        _ => None,
    }
}

/// From a peer timeout's "N of M activities had executed": (N, M).
fn progress(notes: &str) -> Option<(u64, u64)> {
    let part = notes
        .split(';')
        .find(|part| part.contains("activities had executed"))?;
    let words: Vec<&str> = part.split_whitespace().collect();
    let of = words.iter().position(|word| *word == "of")?;
    Some((
        words.get(of.checked_sub(1)?)?.parse().ok()?,
        words.get(of + 1)?.parse().ok()?,
    ))
}

fn number(x: f64) -> String {
    if x >= 1000.0 {
        thousands(x.round() as u64)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn times(r: f64) -> String {
    if r >= 100.0 {
        format!("{}×", thousands(r.round() as u64))
    } else if r >= 10.0 {
        format!("{r:.0}×")
    } else {
        format!("{r:.1}×")
    }
}

/// A peer cell: its text, and the figure to compare with (`bound`: a limit, not a
/// measurement, so the ratio is a bound too).
struct PeerCell {
    text: String,
    figure: Option<f64>,
    bound: bool,
}

fn peer_cell(line: Option<&Value>, metric: Metric, timeout_s: f64) -> PeerCell {
    let plain = |text: &str| PeerCell {
        text: text.to_owned(),
        figure: None,
        bound: false,
    };
    let Some(line) = line else {
        return plain("not run");
    };
    match state(line) {
        None => {
            let figure = value(line, metric.source);
            PeerCell {
                text: figure.map_or_else(|| NONE.to_owned(), number),
                figure,
                bound: false,
            }
        }
        Some("timeout") => {
            let progress = progress(notes(line));
            let done = progress.map_or_else(String::new, |(done, total)| {
                format!("; {done}/{total} activities done")
            });
            match (metric.source, progress) {
                (Source::Key("wall_s"), _) => PeerCell {
                    text: format!("timeout (> {timeout_s} s{done})"),
                    figure: Some(timeout_s),
                    bound: true,
                },
                (Source::Key("activities_per_s"), Some((_, total))) => {
                    let bound = total as f64 / timeout_s;
                    PeerCell {
                        text: format!("timeout (< {}{done})", number(bound)),
                        figure: Some(bound),
                        bound: true,
                    }
                }
                _ => plain(&format!("timeout{done}")),
            }
        }
        Some(other) => plain(other),
    }
}

fn ours_cell(line: Option<&Value>, metric: Metric) -> (String, Option<f64>) {
    let Some(line) = line else {
        return ("not run".to_owned(), None);
    };
    if let Some(state) = state(line) {
        return (state.to_owned(), None);
    }
    let figure = value(line, metric.source);
    (figure.map_or_else(|| NONE.to_owned(), number), figure)
}

fn ratio(peer: &PeerCell, ours: Option<f64>, better: Better) -> String {
    let (Some(theirs), Some(ours)) = (peer.figure, ours) else {
        return NONE.to_owned();
    };
    if theirs <= 0.0 || ours <= 0.0 {
        return NONE.to_owned();
    }
    let r = match better {
        Better::Higher => ours / theirs,
        Better::Lower => theirs / ours,
        Better::Unranked => return NONE.to_owned(),
    };
    let prefix = if peer.bound { "> " } else { "" };
    if r >= 1.0 {
        format!("**{prefix}{}**", times(r))
    } else {
        format!("{prefix}{} (worse)", times(r))
    }
}

fn better_text(better: Better) -> &'static str {
    match better {
        Better::Higher => "higher",
        Better::Lower => "lower",
        Better::Unranked => NONE,
    }
}

fn render(args: &Args, ours: &Lines, peer: Option<&Lines>) -> String {
    let present: Vec<String> = ours
        .keys()
        .chain(peer.into_iter().flat_map(Lines::keys))
        .map(|(workload, _)| workload.clone())
        .collect();
    let wanted = |workload: &str| {
        present.iter().any(|w| w == workload)
            && args
                .workloads
                .as_ref()
                .is_none_or(|list| list.iter().any(|w| w == workload))
    };
    let mut workloads: Vec<String> = WORKLOADS
        .iter()
        .filter(|w| wanted(w))
        .map(|w| (*w).to_owned())
        .collect();
    for workload in &present {
        if !workloads.contains(workload) && wanted(workload) {
            workloads.push(workload.clone());
        }
    }
    let buffered = ours.keys().any(|(_, store)| store == "fjall-buffered");

    let mut out = String::new();
    let mut header = vec![
        "workload",
        "metric",
        "better",
        "duroxide (peer)",
        "durable (fsync)",
        "ratio (higher: ours ÷ peer; lower: peer ÷ ours)",
    ];
    if buffered {
        header.extend(["durable (buffered)", "ratio (buffered)"]);
    }
    row(&mut out, &header);
    row(&mut out, &vec!["---"; header.len()]);
    for workload in &workloads {
        let theirs = peer.and_then(|peer| line(peer, workload, None));
        for metric in metrics(workload) {
            let peer_cell = if peer.is_none() {
                PeerCell {
                    text: "not run".to_owned(),
                    figure: None,
                    bound: false,
                }
            } else if !PEER_WORKLOADS.contains(&workload.as_str()) {
                PeerCell {
                    text: NONE.to_owned(),
                    figure: None,
                    bound: false,
                }
            } else {
                peer_cell(theirs, metric, args.peer_timeout_s)
            };
            let mut cells = vec![
                workload.clone(),
                metric.label.to_owned(),
                better_text(metric.better).to_owned(),
                peer_cell.text.clone(),
            ];
            let stores: &[&str] = if buffered {
                &["fjall-fsync", "fjall-buffered"]
            } else {
                &["fjall-fsync"]
            };
            for store in stores {
                let (text, figure) = ours_cell(line(ours, workload, Some(store)), metric);
                cells.push(text);
                cells.push(ratio(&peer_cell, figure, metric.better));
            }
            row(&mut out, &cells);
        }
    }
    out.push_str(
        "\nRatio: how many times better durable is (bold when it is better): ours ÷ peer where \
         higher is better (throughput), peer ÷ ours where lower is better (latency, wall \
         time, memory). `>` marks a bound: the peer did not finish within its time limit, \
         and its figure is what finishing exactly at the limit would have given. — : the \
         peer has no such workload, or the figure does not rank.\n",
    );
    let mut floors: Vec<f64> = ours
        .values()
        .filter_map(|line| fdatasync_floor(notes(line)))
        .collect();
    floors.sort_by(f64::total_cmp);
    if let (Some(low), Some(high)) = (floors.first(), floors.last()) {
        let median = floors[floors.len() / 2];
        let spread = if floors.len() > 1 {
            format!(
                " (median of {} measurements, one per process: {low}–{high} ms)",
                floors.len()
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "\nfdatasync floor (p50 of write 64 B + fdatasync, measured by durable-bench in this run): {median} ms{spread}."
        );
    }
    out.push('\n');
    resources(&mut out, &workloads, ours, peer, buffered);
    out
}

/// Peak RSS and CPU seconds, from the notes.
fn resources(
    out: &mut String,
    workloads: &[String],
    ours: &Lines,
    peer: Option<&Lines>,
    buffered: bool,
) {
    let mut header = vec!["workload", "durable peak RSS MiB", "durable CPU s"];
    if buffered {
        header.extend(["peak RSS MiB (buffered)", "CPU s (buffered)"]);
    }
    header.push("duroxide CPU s");
    row(out, &header);
    row(out, &vec!["---"; header.len()]);
    let figure = |line: Option<&Value>, read: fn(&str) -> Option<f64>| {
        line.and_then(|line| read(notes(line)))
            .map_or_else(|| NONE.to_owned(), number)
    };
    for workload in workloads {
        let mut cells = vec![workload.clone()];
        let stores: &[&str] = if buffered {
            &["fjall-fsync", "fjall-buffered"]
        } else {
            &["fjall-fsync"]
        };
        for store in stores {
            let ours = line(ours, workload, Some(store));
            cells.push(
                ours.and_then(|line| peak_rss(notes(line)))
                    .map_or_else(|| NONE.to_owned(), |mib| format!("{mib:.0}")),
            );
            cells.push(figure(ours, cpu_seconds));
        }
        let theirs = peer.and_then(|peer| line(peer, workload, None));
        cells.push(figure(theirs, cpu_seconds));
        row(out, &cells);
    }
}

fn row<S: AsRef<str>>(out: &mut String, cells: &[S]) {
    out.push('|');
    for cell in cells {
        let _ = write!(out, " {} |", cell.as_ref());
    }
    out.push('\n');
}

pub const WORKERS_USAGE: &str = "\
durable-bench --workers-table: PostgreSQL runs by worker count, against the peer

USAGE:
    bench --workers-table PEER.jsonl|- OURS.jsonl

    PEER.jsonl   duroxide-bench's lines (--provider postgres), or - without the peer
    OURS.jsonl   durable-bench's lines (--store postgres, any --workers), any number of
                 runs of each: every run is listed, the median is compared
";

/// `bench --workers-table PEER OURS`: one row per workload, figure and worker count, every
/// run's value, their median, and the ratio to the peer's median.
pub fn workers_main(args: &[String]) -> ExitCode {
    let (peer, ours) = match args {
        [peer, ours] => (peer, ours),
        _ => {
            eprintln!("{WORKERS_USAGE}");
            return ExitCode::from(64);
        }
    };
    let read = |path: &str| -> Result<Vec<Value>, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| serde_json::from_str(line).map_err(|e| format!("{path}: not JSON: {e}")))
            .collect()
    };
    let ours = match read(ours) {
        Ok(lines) => lines,
        Err(error) => return fail(&error),
    };
    let peer = if peer == "-" {
        Vec::new()
    } else {
        match read(peer) {
            Ok(lines) => lines,
            Err(error) => return fail(&error),
        }
    };
    print!("{}", render_workers(&peer, &ours));
    ExitCode::SUCCESS
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn render_workers(peer: &[Value], ours: &[Value]) -> String {
    let str_of = |line: &Value, key: &str| line.get(key).and_then(Value::as_str).map(str::to_owned);
    let num_of = |line: &Value, key: &str| line.get(key).and_then(Value::as_f64);
    let mut workloads: Vec<String> = Vec::new();
    for line in ours {
        if let Some(workload) = str_of(line, "workload")
            && !workloads.contains(&workload)
        {
            workloads.push(workload);
        }
    }
    let mut worker_counts: Vec<u64> = ours
        .iter()
        .filter_map(|line| line.get("workers").and_then(Value::as_u64))
        .collect();
    worker_counts.sort_unstable();
    worker_counts.dedup();
    let mut out = String::new();
    row(
        &mut out,
        &[
            "workload",
            "figure",
            "better",
            "workers",
            "durable: each run",
            "durable: median",
            "steps per commit (median)",
            "commits/s (median)",
            "duroxide-pg: each run",
            "duroxide-pg: median",
            "ratio (median; >1: durable ahead)",
        ],
    );
    row(&mut out, &["---"; 11]);
    for workload in &workloads {
        let figures: &[(&str, &str, Better)] = match workload.as_str() {
            "seq10-latency" | "cross-partition-hop" | "event-roundtrip" | "timer-100ms" => &[
                ("p50 ms", "p50_ms", Better::Lower),
                ("p99 ms", "p99_ms", Better::Lower),
            ],
            "long-history-5000" | "recovery-10000" | "idle-timers-100000" => {
                &[("wall s", "wall_s", Better::Lower)]
            }
            _ => &[("activities/s", "activities_per_s", Better::Higher)],
        };
        let peer_lines: Vec<&Value> = peer
            .iter()
            .filter(|line| str_of(line, "workload").as_deref() == Some(workload))
            .collect();
        for (label, key, better) in figures {
            let mut peer_values: Vec<f64> =
                peer_lines.iter().filter_map(|l| num_of(l, key)).collect();
            // A peer run stopped by its time limit: the activities it executed in that time
            // (its notes) over the default limit of 300 s, when it has no figure of its own.
            // An upper bound of its rate (not every instance had ended).
            let mut bound = false;
            if *key == "activities_per_s" {
                for line in &peer_lines {
                    let notes = notes(line);
                    if num_of(line, key).is_none()
                        && notes.starts_with("SKIPPED")
                        && let Some(executed) = executed_in_limit(notes)
                    {
                        peer_values.push(executed / 300.0);
                        bound = true;
                    }
                }
            }
            let peer_median = median(&peer_values);
            let listed = |values: &[f64]| {
                if values.is_empty() {
                    NONE.to_owned()
                } else {
                    values
                        .iter()
                        .map(|v| number(*v))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            for workers in &worker_counts {
                let lines: Vec<&Value> = ours
                    .iter()
                    .filter(|line| {
                        str_of(line, "workload").as_deref() == Some(workload)
                            && line.get("workers").and_then(Value::as_u64) == Some(*workers)
                    })
                    .collect();
                if lines.is_empty() {
                    continue;
                }
                let values: Vec<f64> = lines.iter().filter_map(|l| num_of(l, key)).collect();
                let failed = lines.len() - values.len();
                let ours_median = median(&values);
                let steps: Vec<f64> = lines
                    .iter()
                    .filter_map(|l| num_of(l, "steps_per_commit"))
                    .collect();
                let commits: Vec<f64> = lines
                    .iter()
                    .filter_map(|l| num_of(l, "commits_per_s"))
                    .collect();
                let ratio = match (ours_median, peer_median) {
                    (Some(ours), Some(theirs)) if ours > 0.0 && theirs > 0.0 => {
                        let ratio = times(match better {
                            Better::Higher => ours / theirs,
                            _ => theirs / ours,
                        });
                        if bound { format!("≥ {ratio}") } else { ratio }
                    }
                    _ => NONE.to_owned(),
                };
                let peer_each = if bound {
                    format!(
                        "{} (activities executed within the 300 s limit ÷ 300 s; no run finished)",
                        listed(&peer_values)
                    )
                } else {
                    listed(&peer_values)
                };
                let mut each = listed(&values);
                if failed > 0 {
                    let _ = write!(each, " ({failed} failed)");
                }
                row(
                    &mut out,
                    &[
                        workload.clone(),
                        (*label).to_owned(),
                        better_text(*better).to_owned(),
                        workers.to_string(),
                        each,
                        ours_median.map_or(NONE.to_owned(), number),
                        median(&steps).map_or(NONE.to_owned(), number),
                        median(&commits).map_or(NONE.to_owned(), number),
                        peer_each,
                        peer_median.map_or(NONE.to_owned(), number),
                        ratio,
                    ],
                );
            }
        }
    }
    out
}

/// "N activities executed" in a peer line's notes.
fn executed_in_limit(notes: &str) -> Option<f64> {
    let end = notes.find(" activities executed")?;
    let start = notes[..end].rfind(' ').map_or(0, |space| space + 1);
    notes[start..end].parse().ok()
}
