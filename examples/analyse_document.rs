//! Analyses documents with the library alone (no server, no database, no KB) and prints JSON
//! lines: one `document` line per file (kind, counts, analysis wall time), then for a template one
//! `finding` line per verdict. Used by `bench/documents_vs_checkov.py` and
//! `bench/documents_speed.py`.
//!
//! `cargo run --example analyse_document -- [--repeat N] [--quiet] FILE...`
//!
//! `--repeat N` analyses each file N times and reports min and median; findings are printed once.
//! `--quiet` leaves out the finding lines (timing runs). The time covers detection and analysis
//! of bytes already in memory: not process start, not reading the file.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use cloud_optimizer::documents::analysis::{AnalysisError, Kind, Limits};
use cloud_optimizer::documents::{iac, pipeline, prose};
use serde_json::{Value, json};

/// The bounds `documents::job` gives an upload, so the figures are those of the service.
fn limits() -> Limits {
    Limits {
        deadline: Instant::now() + Duration::from_secs(60),
        max_expanded_bytes: 256 * 1024 * 1024,
        max_depth: 64,
    }
}

struct Outcome {
    kind: Option<Kind>,
    summary: Value,
    findings: Vec<Value>,
}

fn analyse(bytes: &[u8]) -> Result<Outcome, AnalysisError> {
    let limits = limits();
    let Some(kind) = pipeline::detect(bytes) else {
        return Ok(Outcome {
            kind: None,
            summary: json!({}),
            findings: Vec::new(),
        });
    };
    if kind.is_template() {
        let report = iac::analyse(kind, bytes, &limits)?;
        let count = |s: &str| {
            report
                .findings
                .iter()
                .filter(|f| f.status.as_str() == s)
                .count()
        };
        let summary = json!({
            "resources": report.resources,
            "findings": report.findings.len(),
            "pass": count("pass"),
            "fail": count("fail"),
            "unknown": count("unknown"),
        });
        let findings = report
            .findings
            .iter()
            .map(|f| {
                json!({
                    "check": f.check,
                    "resource": f.resource,
                    "resource_type": f.resource_type,
                    "status": f.status.as_str(),
                    "line": f.line,
                    "reason": f.reason,
                })
            })
            .collect();
        Ok(Outcome {
            kind: Some(kind),
            summary,
            findings,
        })
    } else {
        let sentences = prose::extract(kind, bytes, &limits)?;
        limits.check_time()?;
        let (facts, findings) = prose::analyse(&sentences, None);
        let count = |s: &str| findings.iter().filter(|f| f.status.as_str() == s).count();
        let summary = json!({
            "pages": facts.pages,
            "sentences": facts.sentences,
            "services": facts.services.len(),
            "measures": facts.measures.len(),
            "frameworks": facts.frameworks,
            "findings": findings.len(),
            "addressed": count("addressed"),
            "contradicted": count("contradicted"),
            "silent": count("silent"),
        });
        Ok(Outcome {
            kind: Some(kind),
            summary,
            findings: Vec::new(),
        })
    }
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn main() -> ExitCode {
    let mut repeat = 1usize;
    let mut quiet = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--repeat" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => repeat = n,
                _ => {
                    eprintln!("--repeat needs a positive number");
                    return ExitCode::from(2);
                }
            },
            "--quiet" => quiet = true,
            _ => files.push(arg),
        }
    }
    if files.is_empty() {
        eprintln!("usage: analyse_document [--repeat N] [--quiet] FILE...");
        return ExitCode::from(2);
    }
    let mut failed = false;
    let mut total = Duration::ZERO;
    for file in &files {
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                println!(
                    "{}",
                    json!({"type": "error", "file": file, "error": e.to_string()})
                );
                failed = true;
                continue;
            }
        };
        let mut times = Vec::with_capacity(repeat);
        let mut outcome = None;
        for _ in 0..repeat {
            let start = Instant::now();
            let result = analyse(&bytes);
            times.push(start.elapsed());
            // Dropping the previous run's findings is not part of the analysis.
            outcome = Some(result);
        }
        times.sort();
        total += times[0];
        let min = times[0];
        let median = times[times.len() / 2];
        match outcome.expect("repeat is at least 1") {
            Ok(o) => {
                println!(
                    "{}",
                    json!({
                        "type": "document",
                        "file": file,
                        "bytes": bytes.len(),
                        "kind": o.kind.map(Kind::as_str),
                        "summary": o.summary,
                        "runs": repeat,
                        "ms_min": millis(min),
                        "ms_median": millis(median),
                    })
                );
                if !quiet {
                    for mut f in o.findings {
                        f["type"] = json!("finding");
                        f["file"] = json!(file);
                        println!("{f}");
                    }
                }
            }
            Err(e) => {
                println!(
                    "{}",
                    json!({"type": "error", "file": file, "error": e.to_string(), "ms_median": millis(median)})
                );
                failed = true;
            }
        }
    }
    println!(
        "{}",
        json!({"type": "total", "files": files.len(), "ms_sum_of_min": millis(total)})
    );
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
