//! The audit's files: `report.md`, a self-contained `index.html` (inline CSS and SVG, nothing
//! from the network), `junit.xml` (one testcase per scenario and seed) and `summary.json`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::picture::escape;
use super::{Audit, RunSummary, ScenarioSummary};
use crate::runner::Verdict;

pub(crate) const CSS: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1100px}\
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top;font-size:13px}\
th{background:#f3f3f3}.fail{color:#c00;font-weight:bold}.pass{color:#080;font-weight:bold}\
code,pre{background:#f6f6f6;padding:1px 4px;font-size:12px}pre{padding:6px;overflow-x:auto}\
section{border-top:2px solid #ddd;margin-top:1.5em}";

fn kinds(map: &BTreeMap<String, usize>) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The violations column: marked when the scenario required them (`[expect] violations`).
fn violations(s: &ScenarioSummary) -> String {
    let text = kinds(&s.violations);
    if s.expected_violations.is_empty() {
        text
    } else {
        format!("{text} (expected: {})", s.expected_violations.join(", "))
    }
}

fn speed(s: &ScenarioSummary) -> String {
    format!(
        "{:.1}x real time, {:.0} broker requests/s",
        s.speedup(),
        s.requests_per_core_second()
    )
}

fn allowed(s: &ScenarioSummary) -> String {
    if s.allowed.is_empty() {
        return "-".into();
    }
    s.allowed
        .iter()
        .map(|(kind, causes)| {
            let causes: Vec<String> = causes.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
            format!("{kind} ({})", causes.join("; "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn shard_text(audit: &Audit) -> String {
    audit.shard.map_or(String::new(), |s| {
        format!(", shard {}/{}", s.index, s.count)
    })
}

fn headline(audit: &Audit) -> String {
    format!(
        "{} runs over seeds {}..{}{}: {} passed, {} failed. {:.1} s wall on {} workers; {} broker requests, {:.0} per wall-second per core.",
        audit.runs_total,
        audit.seeds.start,
        audit.seeds.end,
        shard_text(audit),
        audit.runs_total - audit.runs_failed,
        audit.runs_failed,
        audit.wall_s,
        audit.jobs,
        audit.broker_requests,
        audit.broker_requests_per_core_second
    )
}

/// `report.md`.
pub fn markdown(audit: &Audit) -> String {
    let mut md = String::new();
    let verdict = if audit.passed() { "PASS" } else { "FAIL" };
    let _ = writeln!(md, "# Simulation audit: {verdict}\n\n{}\n", headline(audit));
    // The mutants table alone (`--mutants` without `--seeds`) has no scenario rows.
    if !audit.scenarios.is_empty() {
        let _ = writeln!(
            md,
            "| scenario | seeds | passed | failed | violations | allowed anomalies (causes) | faults that struck | simulated | speed (one core) |\n|---|---|---|---|---|---|---|---|---|"
        );
    }
    for s in &audit.scenarios {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s | {} |",
            s.name,
            s.seeds,
            s.passed,
            s.failed,
            violations(s),
            allowed(s),
            kinds(&s.faults),
            s.sim_ms as f64 / 1000.0,
            speed(s)
        );
    }
    let failures: Vec<&RunSummary> = audit
        .runs
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(
            md,
            "\n## Failures\n\nEach failure's timeline, latency and throughput are drawn in `index.html`."
        );
    }
    for r in failures {
        let _ = writeln!(
            md,
            "\n### {} seed {}\n\nreplay: `{}`  \ntrace: `{}`\n",
            r.scenario, r.seed, r.replay, r.trace_hash
        );
        let _ = writeln!(md, "violations: {}\n", kinds(&r.violations));
        for f in r.violations() {
            let _ = writeln!(
                md,
                "- VIOLATION {} ({}): {}",
                f.kind,
                f.source,
                short(&f.description)
            );
        }
        if r.findings_total > r.findings.len() {
            let _ = writeln!(
                md,
                "- ... {} findings in all (the replay prints every one)",
                r.findings_total
            );
        }
    }
    if let Some(m) = &audit.mutants {
        md.push_str(&super::mutants::markdown(m));
    }
    md
}

/// `index.html`.
pub fn html(audit: &Audit) -> String {
    let mut h = String::new();
    let verdict = if audit.passed() {
        r#"<span class="pass">PASS</span>"#
    } else {
        r#"<span class="fail">FAIL</span>"#
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Simulation audit</title><style>{CSS}</style></head><body>\n<h1>Simulation audit: {verdict}</h1>\n<p>{}</p>\n",
        escape(&headline(audit))
    );
    h.push_str("<table><tr><th>scenario</th><th>seeds</th><th>passed</th><th>failed</th><th>violations</th><th>allowed anomalies (causes)</th><th>faults that struck</th><th>simulated</th><th>speed (one core)</th></tr>\n");
    for s in &audit.scenarios {
        let failed = if s.failed == 0 {
            "0".to_string()
        } else {
            let links: Vec<String> = s
                .failing_seeds
                .iter()
                .map(|seed| format!("<a href=\"#{}\">{seed}</a>", anchor(&s.file, *seed)))
                .collect();
            format!(
                "<span class=\"fail\">{}</span> (seeds {})",
                s.failed,
                links.join(", ")
            )
        };
        let _ = writeln!(
            h,
            "<tr><td title=\"{}\">{}</td><td>{}</td><td>{}</td><td>{failed}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td></tr>",
            escape(&s.file),
            escape(&s.name),
            s.seeds,
            s.passed,
            escape(&violations(s)),
            escape(&allowed(s)),
            escape(&kinds(&s.faults)),
            s.sim_ms as f64 / 1000.0,
            escape(&speed(s))
        );
    }
    h.push_str("</table>\n");
    for r in audit.runs.iter().filter(|r| r.verdict == Verdict::Fail) {
        let _ = write!(
            h,
            "<section id=\"{}\"><h2>{} seed {} <span class=\"fail\">FAIL</span></h2>\n<p>replay: <code>{}</code> &nbsp; trace <code>{}</code> &nbsp; {:.1} s simulated</p>\n<p>violations: {} &nbsp; allowed: {} &nbsp; faults: {}</p>\n<ul>",
            anchor(&r.file, r.seed),
            escape(&r.scenario),
            r.seed,
            escape(&r.replay),
            r.trace_hash,
            r.sim_ms as f64 / 1000.0,
            escape(&kinds(&r.violations)),
            escape(&kinds(&r.allowed.iter().map(|(k, c)| (k.clone(), c.values().sum())).collect())),
            escape(&kinds(&r.faults))
        );
        for f in &r.findings {
            let status = if f.allowed {
                "allowed"
            } else {
                "<b class=\"fail\">VIOLATION</b>"
            };
            let cause = f
                .cause
                .as_ref()
                .map_or(String::new(), |c| format!(" ({})", escape(c)));
            let _ = write!(
                h,
                "<li>{status} {}{cause}: {}</li>",
                escape(&f.kind),
                escape(&short(&f.description))
            );
        }
        if r.findings_total > r.findings.len() {
            let _ = write!(
                h,
                "<li>... {} findings in all (the replay prints every one)</li>",
                r.findings_total
            );
        }
        h.push_str("</ul>\n");
        if let Some(svg) = &r.picture {
            h.push_str(svg);
        }
        h.push_str("</section>\n");
    }
    if let Some(m) = &audit.mutants {
        h.push_str(&super::mutants::html(m));
    }
    h.push_str("</body></html>\n");
    h
}

/// One line of at most 300 characters.
fn short(text: &str) -> String {
    let line = text.replace('\n', " ");
    match line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}

fn anchor(file: &str, seed: u64) -> String {
    let name: String = file
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("{name}-seed-{seed}")
}

/// `junit.xml`: one testsuite per scenario, one testcase per seed.
pub fn junit(audit: &Audit) -> String {
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"sim audit\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        audit.runs_total, audit.runs_failed, audit.wall_s
    );
    for s in &audit.scenarios {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
            escape(&s.name),
            s.seeds,
            s.failed,
            s.wall_ms / 1000.0
        );
        for r in audit.runs.iter().filter(|r| r.file == s.file) {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"seed {}\" time=\"{:.3}\"",
                escape(&r.scenario),
                r.seed,
                r.wall_ms / 1000.0
            );
            if r.verdict == Verdict::Pass {
                x.push_str("/>\n");
                continue;
            }
            let mut body = format!("replay: {}\n", r.replay);
            for f in r.violations() {
                let _ = writeln!(
                    body,
                    "VIOLATION {} ({}): {}",
                    f.kind,
                    f.source,
                    short(&f.description)
                );
            }
            let _ = write!(
                x,
                ">\n      <failure message=\"{}\" type=\"violation\">{}</failure>\n    </testcase>\n",
                escape(&format!("violations: {}", kinds(&r.violations))),
                escape(&body)
            );
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Writes the four files into `dir` (created if missing).
pub fn write_all(audit: &Audit, dir: &Path) -> std::io::Result<()> {
    // The operator's output directory, outside any simulation: plain std::fs.
    #[allow(clippy::disallowed_methods)]
    {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.md"), markdown(audit))?;
        std::fs::write(dir.join("index.html"), html(audit))?;
        std::fs::write(dir.join("junit.xml"), junit(audit))?;
        let json = serde_json::to_string_pretty(audit).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("summary.json"), json)?;
    }
    Ok(())
}
