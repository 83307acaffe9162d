//! A run drawn as inline SVG, after Jepsen's plots: a timeline of operations per client and
//! partition with the fault windows shaded and the anomalous operations marked, and latency
//! and throughput over simulated time. No scripts, no fonts or styles from the network: the
//! SVG opens from disk anywhere.
//!
//! The timeline is drawn per pixel column, not per operation: each lane's column takes the
//! colour of the most telling outcome among the operations in flight there (unknown over
//! failed over ok), and runs of one colour become one rectangle. A run of tens of thousands of
//! operations stays a picture of a few hundred kilobytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::checker::Status;
use crate::history::{Op, OpKind, Outcome, Process};
use crate::runner::{Report, FINAL_READER};
use crate::trace::TraceEvent;

/// One fault as the nemesis applied it: from its start to its undoing (or the heal), or an
/// instant (a bit flip, a restart of a live broker).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultWindow {
    /// The scenario file's kind name (`crash`, `disk-eio`, ...).
    pub kind: &'static str,
    /// The nemesis's line, e.g. `crash broker-1 (kill + power loss)`.
    pub label: String,
    pub start_ms: u64,
    /// `None` for an instant.
    pub end_ms: Option<u64>,
}

/// How a nemesis line starts or ends a window.
enum Edge {
    Start(&'static str, String),
    End(String),
    Instant(&'static str),
    HealAll,
}

/// Reads one nemesis trace line (`chaos::nemesis::Fault`'s display, maybe followed by `: how`).
/// The key names what an undo must match: the kind and its target.
fn edge(line: &str) -> Option<Edge> {
    let key = |kind: &str, target: &str| format!("{kind} {}", target.trim());
    let until_colon = |s: &str| s.split(':').next().unwrap_or("").trim().to_string();
    if line.starts_with("skipped ") {
        return None;
    }
    if let Some(rest) = line.strip_prefix("crash ") {
        let target = rest.split(" (").next().unwrap_or(rest);
        return Some(Edge::Start("crash", key("crash", target)));
    }
    if let Some(rest) = line.strip_prefix("restart ") {
        // Ends a crash, or is a clean restart of a live broker (an instant): `windows` decides.
        return Some(Edge::End(key("crash", &until_colon(rest))));
    }
    let pairs: [(&str, &str, &'static str); 5] = [
        ("pause ", "resume ", "pause"),
        ("isolate ", "reconnect ", "isolate"),
        ("cut link ", "restore link ", "cut-link"),
        ("disk full on ", "disk unlimited on ", "disk-full"),
        ("split ", "mend the split of ", "split"),
    ];
    for (start, end, kind) in pairs {
        if let Some(rest) = line.strip_prefix(end) {
            return Some(Edge::End(key(kind, &until_colon(rest))));
        }
        if let Some(rest) = line.strip_prefix(start) {
            let target = rest
                .split(" (headroom")
                .next()
                .unwrap_or(rest)
                .split(" from the rest")
                .next()
                .unwrap_or(rest);
            return Some(Edge::Start(kind, key(kind, &until_colon(target))));
        }
    }
    if let Some(rest) = line.strip_prefix("packet loss ") {
        let rate: f64 = until_colon(rest).parse().unwrap_or(0.0);
        return Some(if rate == 0.0 {
            Edge::End("packet-loss".into())
        } else {
            Edge::Start("packet-loss", "packet-loss".into())
        });
    }
    if let Some(rest) = line.strip_prefix("latency ") {
        return Some(if rest.starts_with("default") {
            Edge::End("latency".into())
        } else {
            Edge::Start("latency", "latency".into())
        });
    }
    if let Some(rest) = line.strip_prefix("disk eio on ") {
        // "broker-1: write 0.1 sync 0"
        let (node, rates) = rest.split_once(": write ").unwrap_or((rest, ""));
        let zero = until_colon(rates)
            .split(' ')
            .filter_map(|w| w.parse::<f64>().ok())
            .all(|r| r == 0.0);
        let k = key("disk-eio", node);
        return Some(if zero {
            Edge::End(k)
        } else {
            Edge::Start("disk-eio", k)
        });
    }
    if let Some(rest) = line.strip_prefix("torn writes on ") {
        let (node, on) = rest.split_once(": ").unwrap_or((rest, ""));
        let k = key("disk-torn", node);
        return Some(if on.starts_with("true") {
            Edge::Start("disk-torn", k)
        } else {
            Edge::End(k)
        });
    }
    if let Some(rest) = line.strip_prefix("clock of ") {
        let (node, offset) = rest.split_once(" at true time ").unwrap_or((rest, ""));
        let k = key("clock-skew", node);
        return Some(if offset.starts_with("+0 ms") {
            Edge::End(k)
        } else {
            Edge::Start("clock-skew", k)
        });
    }
    if line.starts_with("bit flip on ") {
        return Some(Edge::Instant("bit-flip"));
    }
    if line.starts_with("heal everything") {
        return Some(Edge::HealAll);
    }
    None
}

/// The fault windows of a run, read from the nemesis's lines of its trace, in start order.
/// Windows still open at the end close at `end_ms`. The runner's own heal after the fault
/// window (`heal everything: Done(...)`) closes windows but is not itself a fault that struck.
pub fn fault_windows(trace: &[TraceEvent], end_ms: u64) -> Vec<FaultWindow> {
    let mut out: Vec<FaultWindow> = Vec::new();
    let mut open: BTreeMap<String, usize> = BTreeMap::new();
    for event in trace.iter().filter(|e| &*e.node == "nemesis") {
        let at = event.at_us / 1000;
        match edge(&event.event) {
            None => {}
            Some(Edge::Start(kind, key)) => {
                if let Some(i) = open.remove(&key) {
                    out[i].end_ms = Some(at);
                }
                open.insert(key, out.len());
                out.push(FaultWindow {
                    kind,
                    label: event.event.clone(),
                    start_ms: at,
                    end_ms: None,
                });
            }
            Some(Edge::End(key)) => match open.remove(&key) {
                Some(i) => out[i].end_ms = Some(at),
                // A restart of a broker that was not crashed: a clean process restart.
                None if key.starts_with("crash ") => out.push(FaultWindow {
                    kind: "restart",
                    label: event.event.clone(),
                    start_ms: at,
                    end_ms: None,
                }),
                None => {}
            },
            Some(Edge::Instant(kind)) => out.push(FaultWindow {
                kind,
                label: event.event.clone(),
                start_ms: at,
                end_ms: None,
            }),
            Some(Edge::HealAll) => {
                for (_, i) in std::mem::take(&mut open) {
                    out[i].end_ms = Some(at);
                }
                let by_runner =
                    event.event.contains(": Done(") || event.event.contains(": Skipped(");
                if !by_runner {
                    out.push(FaultWindow {
                        kind: "heal",
                        label: event.event.clone(),
                        start_ms: at,
                        end_ms: None,
                    });
                }
            }
        }
    }
    for (_, i) in open {
        out[i].end_ms = Some(end_ms.max(out[i].start_ms));
    }
    out
}

/// Escapes text for XML and HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A fixed colour per fault kind (translucent when shaded).
fn fault_colour(kind: &str) -> &'static str {
    match kind {
        "crash" | "restart" => "#d62728",
        "pause" => "#9467bd",
        "isolate" | "split" | "cut-link" => "#1f77b4",
        "packet-loss" | "latency" => "#17becf",
        "disk-eio" | "disk-full" | "disk-torn" | "bit-flip" => "#8c564b",
        "clock-skew" => "#bcbd22",
        _ => "#7f7f7f",
    }
}

const OK: &str = "#2ca02c";
const FAILED: &str = "#ff7f0e";
const UNKNOWN: &str = "#e377c2";

/// The lane an operation is drawn in: its client process and partition.
fn lane_of(op: &Op) -> (u8, Process, String) {
    let who = |p: Process, role: u8| (if p == FINAL_READER { 3 } else { role }, p);
    let (role, process, tp) = match &op.kind {
        OpKind::Send {
            producer,
            topic,
            partition,
            ..
        } => (0, *producer, format!("{topic}/{partition}")),
        OpKind::Poll {
            consumer,
            topic,
            partition,
            ..
        } => (1, *consumer, format!("{topic}/{partition}")),
        OpKind::Commit {
            consumer, group, ..
        } => (2, *consumer, format!("group {group}")),
        OpKind::FetchCommitted {
            consumer,
            topic,
            partition,
            ..
        } => (2, *consumer, format!("{topic}/{partition}")),
        OpKind::BeginTxn { producer, .. }
        | OpKind::SendOffsetsToTxn { producer, .. }
        | OpKind::EndTxn { producer, .. } => (0, *producer, "transactions".to_string()),
    };
    let (role, process) = who(process, role);
    (role, process, tp)
}

fn lane_name(role: u8, process: Option<Process>, tp: &str) -> String {
    let who = ["producer", "consumer", "member", "final reader"][usize::from(role.min(3))];
    match process {
        Some(p) if role != 3 => format!("{who} {p} {tp}"),
        _ if role == 3 => format!("{who} {tp}"),
        _ => format!("{who}s {tp}"),
    }
}

/// 0 ok, 1 failed, 2 unknown or pending: the colour that wins a pixel column.
fn severity(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Ok { .. } => 0,
        Outcome::Fail { .. } => 1,
        Outcome::Unknown { .. } | Outcome::Pending => 2,
    }
}

const WIDTH: f64 = 960.0;
const LEFT: f64 = 190.0;
const LANE: f64 = 11.0;
/// More lanes than this and the timeline draws one lane per role and partition instead.
const MAX_LANES: usize = 48;
/// Anomalous operations marked per timeline.
const MAX_MARKERS: usize = 300;

struct Scale {
    end_ms: u64,
}

impl Scale {
    fn x(&self, ms: u64) -> f64 {
        LEFT + (ms.min(self.end_ms) as f64 / self.end_ms.max(1) as f64) * (WIDTH - LEFT - 10.0)
    }

    fn column(&self, ms: u64) -> usize {
        (self.x(ms) - LEFT) as usize
    }
}

fn shade(svg: &mut String, windows: &[FaultWindow], scale: &Scale, top: f64, height: f64) {
    for w in windows {
        let colour = fault_colour(w.kind);
        let x = scale.x(w.start_ms);
        match w.end_ms {
            Some(end) => {
                let width = (scale.x(end) - x).max(1.0);
                let _ = write!(
                    svg,
                    r#"<rect x="{x:.1}" y="{top:.1}" width="{width:.1}" height="{height:.1}" fill="{colour}" fill-opacity="0.13"><title>{} {}..{} ms</title></rect>"#,
                    escape(&w.label),
                    w.start_ms,
                    end
                );
            }
            None => {
                let _ = write!(
                    svg,
                    r#"<line x1="{x:.1}" x2="{x:.1}" y1="{top:.1}" y2="{:.1}" stroke="{colour}" stroke-dasharray="3,2"><title>{} at {} ms</title></line>"#,
                    top + height,
                    escape(&w.label),
                    w.start_ms
                );
            }
        }
    }
}

fn time_axis(svg: &mut String, scale: &Scale, y: f64) {
    let step = [
        100u64, 250, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 60_000,
    ]
    .into_iter()
    .find(|s| scale.end_ms / s <= 12)
    .unwrap_or(120_000);
    let mut t = 0;
    while t <= scale.end_ms {
        let x = scale.x(t);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{y:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" font-size="9" text-anchor="middle">{:.1} s</text>"##,
            y + 4.0,
            y + 13.0,
            t as f64 / 1000.0
        );
        t += step;
    }
}

/// The operations the checker named in an anomaly, with what it said (violations win).
fn marked_ops(report: &Report) -> BTreeMap<usize, (bool, String)> {
    let mut marked: BTreeMap<usize, (bool, String)> = BTreeMap::new();
    for a in report.checker.iter().flat_map(|c| c.anomalies.iter()) {
        let violation = a.status == Status::Violation;
        let explanation: String = a.explanation.chars().take(120).collect();
        let what = match &a.status {
            Status::Violation => format!("VIOLATION {}: {explanation}", a.kind),
            Status::Allowed { cause } => format!("allowed {} ({cause}): {explanation}", a.kind),
        };
        for e in &a.evidence {
            let entry = marked.entry(e.op).or_insert((violation, String::new()));
            if violation && !entry.0 {
                *entry = (true, String::new());
            }
            // Hover text stays short: a partition's worth of anomalies names the same ops.
            if entry.0 == violation && entry.1.matches(" | ").count() < 2 {
                if !entry.1.is_empty() {
                    entry.1.push_str(" | ");
                }
                let _ = write!(entry.1, "{what} — op {}: {}", e.op, e.role);
            }
        }
    }
    marked
}

/// The timeline: one lane per client process and partition.
fn timeline(
    svg: &mut String,
    report: &Report,
    windows: &[FaultWindow],
    scale: &Scale,
    top: f64,
) -> f64 {
    let ops = &report.history.ops;
    let mut lanes: BTreeSet<(u8, Process, String)> = ops.iter().map(lane_of).collect();
    let collapse = lanes.len() > MAX_LANES;
    if collapse {
        lanes = lanes
            .into_iter()
            .map(|(role, p, tp)| (role, if role == 3 { p } else { 0 }, tp))
            .collect();
    }
    let index: BTreeMap<(u8, Process, String), usize> = lanes
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, l)| (l, i))
        .collect();
    let key = |op: &Op| {
        let (role, p, tp) = lane_of(op);
        (role, if collapse && role != 3 { 0 } else { p }, tp)
    };
    let columns = (WIDTH - LEFT - 10.0) as usize + 1;
    let mut pixels: Vec<Vec<Option<u8>>> = vec![vec![None; columns]; lanes.len()];
    for op in ops {
        let lane = index[&key(op)];
        let end = op.complete_ms.unwrap_or(scale.end_ms);
        let sev = severity(&op.outcome);
        let (from, to) = (
            scale.column(op.invoke_ms),
            scale.column(end).min(columns - 1),
        );
        for px in pixels[lane].iter_mut().take(to + 1).skip(from) {
            *px = Some(px.map_or(sev, |s| s.max(sev)));
        }
    }
    let height = lanes.len() as f64 * LANE;
    let _ = write!(
        svg,
        r#"<text x="4" y="{:.1}" font-size="12" font-weight="bold">Operations per client and partition{}</text>"#,
        top - 6.0,
        if collapse {
            " (clients merged per partition)"
        } else {
            ""
        }
    );
    shade(svg, windows, scale, top, height);
    for (i, (role, p, tp)) in lanes.iter().enumerate() {
        let y = top + i as f64 * LANE;
        let process = (!collapse || *role == 3).then_some(*p);
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">{}</text>"#,
            LEFT - 4.0,
            y + LANE - 2.5,
            escape(&lane_name(*role, process, tp))
        );
        let row = &pixels[i];
        let mut c = 0;
        while c < columns {
            let Some(sev) = row[c] else {
                c += 1;
                continue;
            };
            let start = c;
            while c < columns && row[c] == Some(sev) {
                c += 1;
            }
            let colour = [OK, FAILED, UNKNOWN][usize::from(sev)];
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{}" height="{:.1}" fill="{colour}"/>"#,
                LEFT + start as f64,
                y + 1.5,
                c - start,
                LANE - 3.0
            );
        }
    }
    // Past a few hundred markers the lanes are solid red anyway; violations are drawn first.
    let mut marked: Vec<(usize, (bool, String))> = marked_ops(report).into_iter().collect();
    marked.sort_by_key(|(op, (violation, _))| (!violation, *op));
    marked.truncate(MAX_MARKERS);
    for (op_id, (violation, what)) in marked {
        let Some(op) = ops.get(op_id) else { continue };
        let y = top + index[&key(op)] as f64 * LANE;
        let x = scale.x(op.invoke_ms);
        let (fill, size) = if violation {
            ("#d00", 5.0)
        } else {
            ("#555", 3.5)
        };
        let _ = write!(
            svg,
            r#"<path d="M{:.1},{:.1} l{size},-{:.1} h-{:.1} z" fill="{fill}" stroke="white" stroke-width="0.5"><title>{}</title></path>"#,
            x - size / 2.0,
            y + LANE - 1.0,
            size * 1.6,
            size * 2.0,
            escape(&what)
        );
    }
    let mut y = top + height;
    // The harness's findings name a time, not an operation: a lane of their own.
    let harness: Vec<_> = report.anomalies.iter().collect();
    if !harness.is_empty() {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">harness findings</text>"#,
            LEFT - 4.0,
            y + LANE - 2.5
        );
        for a in harness {
            let fill = if a.allowed { "#555" } else { "#d00" };
            for &at in a.at_ms.iter().take(50) {
                let _ = write!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{fill}"><title>{}</title></circle>"#,
                    scale.x(at),
                    y + LANE / 2.0,
                    escape(&a.description)
                );
            }
        }
        y += LANE;
    }
    time_axis(svg, scale, y + 2.0);
    y + 22.0
}

/// Buckets of simulated time for the plots.
const BUCKETS: usize = 120;

fn bucket_of(ms: u64, end_ms: u64) -> usize {
    ((ms as f64 / end_ms.max(1) as f64) * BUCKETS as f64).min(BUCKETS as f64 - 1.0) as usize
}

fn quantile(sorted: &[u64], q: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    Some(sorted[i])
}

/// A line through the points; `None` (a bucket without data) breaks it.
fn polyline(
    svg: &mut String,
    points: &[Option<(f64, f64)>],
    colour: &str,
    dash: &str,
    title: &str,
) {
    for run in points.split(Option::is_none).filter(|r| !r.is_empty()) {
        let mut d = String::new();
        for (x, y) in run.iter().flatten() {
            let _ = write!(d, "{x:.1},{y:.1} ");
        }
        let _ = write!(
            svg,
            r#"<polyline points="{d}" fill="none" stroke="{colour}" stroke-width="1.3" stroke-dasharray="{dash}"><title>{}</title></polyline>"#,
            escape(title)
        );
    }
}

fn legend(svg: &mut String, x: f64, y: f64, items: &[(&str, &str)]) {
    let mut x = x;
    for (colour, name) in items {
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="10" height="8" fill="{colour}"/><text x="{:.1}" y="{y:.1}" font-size="9">{}</text>"#,
            y - 7.5,
            x + 13.0,
            escape(name)
        );
        x += 18.0 + name.len() as f64 * 5.2;
    }
}

/// Latency over simulated time (log scale): p50 and p99 of ok sends and polls per bucket,
/// failed and unknown operations as points. Jepsen's latency plot.
fn latency(
    svg: &mut String,
    report: &Report,
    windows: &[FaultWindow],
    scale: &Scale,
    top: f64,
) -> f64 {
    let height = 150.0;
    let _ = write!(
        svg,
        r#"<text x="4" y="{:.1}" font-size="12" font-weight="bold">Latency (ms, log scale) by invocation time</text>"#,
        top - 6.0
    );
    shade(svg, windows, scale, top, height);
    let mut per: BTreeMap<(&str, usize), Vec<u64>> = BTreeMap::new();
    let mut points: BTreeSet<(usize, usize, u8)> = BTreeSet::new();
    let max_latency = report
        .history
        .ops
        .iter()
        .filter_map(|op| op.complete_ms.map(|c| c.saturating_sub(op.invoke_ms)))
        .max()
        .unwrap_or(1)
        .max(10);
    let y_of = |ms: u64| {
        let l = ((ms.max(1) as f64).ln() / (max_latency as f64).ln()).min(1.0);
        top + height - l * height
    };
    for op in &report.history.ops {
        let Some(done) = op.complete_ms else { continue };
        let latency = done.saturating_sub(op.invoke_ms);
        let kind = match op.kind {
            OpKind::Send { .. } => "send",
            OpKind::Poll { .. } => "poll",
            _ => "group",
        };
        match severity(&op.outcome) {
            0 => per
                .entry((kind, bucket_of(op.invoke_ms, scale.end_ms)))
                .or_default()
                .push(latency),
            sev => {
                points.insert((scale.column(op.invoke_ms), y_of(latency) as usize, sev));
            }
        }
    }
    for (kind, colour) in [
        ("send", "#1f77b4"),
        ("poll", "#2ca02c"),
        ("group", "#9467bd"),
    ] {
        for (q, dash) in [(0.5, ""), (0.99, "4,2")] {
            let line: Vec<Option<(f64, f64)>> = (0..BUCKETS)
                .map(|b| {
                    let v = per.get_mut(&(kind, b))?;
                    v.sort_unstable();
                    let ms = (b as u64 * scale.end_ms + scale.end_ms / 2) / BUCKETS as u64;
                    quantile(v, q).map(|l| (scale.x(ms), y_of(l)))
                })
                .collect();
            polyline(
                svg,
                &line,
                colour,
                dash,
                &format!("{kind} p{}", (q * 100.0) as u32),
            );
        }
    }
    for (column, y, sev) in points.into_iter().take(5_000) {
        let colour = if sev == 1 { FAILED } else { UNKNOWN };
        let _ = write!(
            svg,
            r#"<circle cx="{:.1}" cy="{y}" r="1.6" fill="{colour}"/>"#,
            LEFT + column as f64
        );
    }
    for ms in [1u64, 10, 100, 1_000, 10_000, 100_000] {
        if ms > max_latency {
            break;
        }
        let y = y_of(ms);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">{ms}</text>"##,
            WIDTH - 10.0,
            LEFT - 4.0,
            y + 3.0
        );
    }
    time_axis(svg, scale, top + height + 2.0);
    legend(
        svg,
        LEFT,
        top + height + 30.0,
        &[
            ("#1f77b4", "send p50 (dashed p99)"),
            ("#2ca02c", "poll p50 (dashed p99)"),
            ("#9467bd", "group ops"),
            (FAILED, "failed"),
            (UNKNOWN, "unknown"),
        ],
    );
    top + height + 40.0
}

/// Completions per simulated second by outcome. Jepsen's rate plot.
fn throughput(
    svg: &mut String,
    report: &Report,
    windows: &[FaultWindow],
    scale: &Scale,
    top: f64,
) -> f64 {
    let height = 110.0;
    let _ = write!(
        svg,
        r#"<text x="4" y="{:.1}" font-size="12" font-weight="bold">Throughput (operations completed per simulated second)</text>"#,
        top - 6.0
    );
    shade(svg, windows, scale, top, height);
    let mut counts = [[0u64; BUCKETS]; 3];
    for op in &report.history.ops {
        if let Some(done) = op.complete_ms {
            counts[usize::from(severity(&op.outcome))][bucket_of(done, scale.end_ms)] += 1;
        }
    }
    let bucket_s = scale.end_ms.max(1) as f64 / 1000.0 / BUCKETS as f64;
    let max_rate = counts
        .iter()
        .flatten()
        .map(|&n| n as f64 / bucket_s)
        .fold(1.0, f64::max);
    for (sev, colour, name) in [
        (0, OK, "ok"),
        (1, FAILED, "failed"),
        (2, UNKNOWN, "unknown"),
    ] {
        let line: Vec<Option<(f64, f64)>> = (0..BUCKETS)
            .map(|b| {
                let ms = (b as u64 * scale.end_ms + scale.end_ms / 2) / BUCKETS as u64;
                let rate = counts[sev][b] as f64 / bucket_s;
                Some((scale.x(ms), top + height - rate / max_rate * height))
            })
            .collect();
        polyline(svg, &line, colour, "", name);
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">{max_rate:.0}/s</text><text x="{:.1}" y="{:.1}" font-size="9" text-anchor="end">0</text>"#,
        LEFT - 4.0,
        top + 8.0,
        LEFT - 4.0,
        top + height
    );
    time_axis(svg, scale, top + height + 2.0);
    legend(
        svg,
        LEFT,
        top + height + 30.0,
        &[(OK, "ok"), (FAILED, "failed"), (UNKNOWN, "unknown")],
    );
    top + height + 40.0
}

/// The picture of one run: timeline, latency and throughput, one SVG.
pub fn draw(report: &Report) -> String {
    let end_ms = report
        .history
        .ops
        .iter()
        .filter_map(|op| op.complete_ms)
        .chain([report.sim_ms])
        .max()
        .unwrap_or(1)
        .max(1);
    let scale = Scale { end_ms };
    let windows = fault_windows(&report.trace, end_ms);
    let mut body = String::new();
    let mut y = 40.0;
    let mut kinds: Vec<&str> = windows.iter().map(|w| w.kind).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut items: Vec<(&str, &str)> = vec![
        (OK, "ok"),
        (FAILED, "failed"),
        (UNKNOWN, "unknown / pending"),
    ];
    items.extend(kinds.iter().map(|k| (fault_colour(k), *k)));
    legend(&mut body, 4.0, 14.0, &items);
    let _ = write!(
        body,
        r##"<path d="M{:.1},27 l5,-8 h-10 z" fill="#d00"/><text x="{:.1}" y="26" font-size="9">violation</text><path d="M{:.1},26 l3.5,-5.6 h-7 z" fill="#555"/><text x="{:.1}" y="26" font-size="9">allowed anomaly (hover for details)</text>""##,
        6.0, 14.0, 70.0, 78.0
    );
    y = timeline(&mut body, report, &windows, &scale, y + 14.0);
    y = latency(&mut body, report, &windows, &scale, y + 20.0);
    y = throughput(&mut body, report, &windows, &scale, y + 20.0);
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y:.0}" viewBox="0 0 {WIDTH} {y:.0}" font-family="sans-serif">{body}</svg>"#
    )
}

/// A self-contained HTML page with one run's picture (`cargo sim run --html`).
pub fn page(report: &Report) -> String {
    let mut findings = String::new();
    for a in &report.anomalies {
        let status = if a.allowed { "allowed" } else { "VIOLATION" };
        let _ = writeln!(findings, "{status} {:?}: {}", a.kind, a.description);
    }
    for a in report.checker.iter().flat_map(|c| c.anomalies.iter()) {
        let _ = write!(findings, "{a}");
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>{css}</style></head><body>\n<h1>{title}</h1>\n<p><code>{verdict}</code></p>\n<p>replay: <code>{replay}</code></p>\n{picture}\n<h2>Findings</h2>\n<pre>{findings}</pre>\n</body></html>\n",
        title = escape(&format!("{} seed {}", report.scenario, report.seed)),
        css = super::output::CSS,
        verdict = escape(&report.verdict_line()),
        replay = escape(&report.replay),
        picture = draw(report),
        findings = if findings.is_empty() { "none".to_string() } else { escape(&findings) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nemesis(at_ms: u64, event: &str) -> TraceEvent {
        TraceEvent {
            at_us: at_ms * 1000,
            node: "nemesis".into(),
            event: event.into(),
        }
    }

    fn spans(windows: &[FaultWindow]) -> Vec<(&str, u64, Option<u64>)> {
        windows
            .iter()
            .map(|w| (w.kind, w.start_ms, w.end_ms))
            .collect()
    }

    #[test]
    fn each_fault_window_ends_where_its_own_undo_strikes() {
        let trace = [
            nemesis(100, "crash broker-1 (kill + power loss): 3 bytes lost"),
            nemesis(150, "pause broker-2"),
            nemesis(200, "crash broker-2 (kill + power loss)"),
            nemesis(300, "restart broker-1"),
            nemesis(320, "resume broker-2"),
            nemesis(350, "disk eio on broker-1: write 0.1 sync 0"),
            nemesis(400, "packet loss 0.2"),
            nemesis(450, "disk eio on broker-1: write 0 sync 0"),
            nemesis(500, "skipped isolate client-1: already isolated"),
            nemesis(
                520,
                "bit flip on broker-1: /t-0/00000000000000000000.log byte 17",
            ),
            nemesis(600, "packet loss 0"),
            nemesis(650, "clock of broker-2 at true time -3000 ms"),
            nemesis(700, "heal everything: Done(\"all healed\")"),
        ];
        assert_eq!(
            spans(&fault_windows(&trace, 900)),
            vec![
                ("crash", 100, Some(300)),
                ("pause", 150, Some(320)),
                ("crash", 200, Some(700)),
                ("disk-eio", 350, Some(450)),
                ("packet-loss", 400, Some(600)),
                ("bit-flip", 520, None),
                ("clock-skew", 650, Some(700)),
            ]
        );
    }

    #[test]
    fn a_scripted_heal_is_a_fault_and_windows_left_open_end_with_the_run() {
        let trace = [
            nemesis(10, "split {broker-1, client-1} from the rest"),
            nemesis(20, "heal everything"),
            nemesis(30, "restart broker-1"),
            nemesis(40, "latency 1000..5000 us"),
            nemesis(50, "torn writes on broker-1: true"),
            nemesis(60, "torn writes on broker-1: false"),
        ];
        assert_eq!(
            spans(&fault_windows(&trace, 90)),
            vec![
                ("split", 10, Some(20)),
                ("heal", 20, None),
                ("restart", 30, None),
                ("latency", 40, Some(90)),
                ("disk-torn", 50, Some(60)),
            ]
        );
    }

    #[test]
    fn escape_leaves_no_markup() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
    }
}
