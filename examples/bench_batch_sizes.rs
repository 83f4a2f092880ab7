//! How long a batched cleanup takes compared with one `DELETE`, and what it does to a
//! concurrent writer, on SQLite (WAL) at several batch sizes.
//!
//! ```sh
//! cargo run --release --example bench_batch_sizes --features sqlite
//! cargo run --release --example bench_batch_sizes --features sqlite -- --tokens 1000000 --json
//! ```
//!
//! Options: `--tokens N` (default 500,000; 80% expired), `--batch-sizes 100,500,..`,
//! `--runs R` (default 3; times are medians), `--json`, `--no-memory` (skip the peak
//! memory check at 100k and 1M tokens, which runs each cleanup in a child process).
//! Variations: `--pause-ms P` (sleep after each batch), `--pragma NAME=VALUE` (a pragma
//! of the cleanup's connection, which also runs the single statement; repeatable),
//! `--shared-pool` (the writer and the cleanup share one single-connection write pool
//! instead of using two connections), `--no-writer`
//! (no concurrent writer), `--sequential-hashes` (token hashes that grow with the id, so
//! that the unique hash index is in insertion order, instead of random ones), `--sweep
//! auto|always|never` (the store's [`SweepMode`]; `auto`, the default, sweeps this table),
//! `--inline-checkpoints` (the store's background checkpoints off: SQLite checkpoints
//! inside the commit that fills the log, as it does by default).
//!
//! Every run starts from a fresh copy of the same seeded file; runs are interleaved
//! (single statement, then each batch size, repeated) so that ratios compare like with
//! like. While the cleanup runs, a writer inserts a token every 2 ms; its worst wait is
//! reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use token_cleanup::SweepMode;

#[path = "../benches/support/mod.rs"]
mod support;

const DEFAULT_SIZES: [u32; 6] = [100, 500, 1000, 2000, 5000, 10_000];

struct Args {
    tokens: u64,
    sizes: Vec<u32>,
    runs: usize,
    json: bool,
    memory: bool,
    pause: Duration,
    pragmas: Vec<(String, String)>,
    hashes: support::Hashes,
    shared_pool: bool,
    writer: bool,
    inline_checkpoints: bool,
    sweep: SweepMode,
    child: Option<(PathBuf, u32)>,
}

fn parse_args() -> Args {
    let mut args = Args {
        tokens: 500_000,
        sizes: DEFAULT_SIZES.to_vec(),
        runs: 3,
        json: false,
        memory: true,
        pause: Duration::ZERO,
        pragmas: Vec::new(),
        hashes: support::Hashes::Random,
        shared_pool: false,
        writer: true,
        inline_checkpoints: false,
        sweep: SweepMode::Auto,
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--tokens" => args.tokens = value("--tokens").parse().expect("--tokens N"),
            "--batch-sizes" => {
                args.sizes = value("--batch-sizes")
                    .split(',')
                    .map(|s| s.trim().parse().expect("--batch-sizes 100,1000"))
                    .collect()
            }
            "--runs" => args.runs = value("--runs").parse().expect("--runs R"),
            "--json" => args.json = true,
            "--no-memory" => args.memory = false,
            "--pause-ms" => {
                args.pause = Duration::from_secs_f64(
                    value("--pause-ms").parse::<f64>().expect("--pause-ms P") / 1000.0,
                )
            }
            "--pragma" => {
                let pragma = value("--pragma");
                let (name, value) = pragma.split_once('=').expect("--pragma NAME=VALUE");
                args.pragmas
                    .push((name.trim().to_owned(), value.trim().to_owned()));
            }
            "--shared-pool" => args.shared_pool = true,
            "--no-writer" => args.writer = false,
            "--sequential-hashes" => args.hashes = support::Hashes::Sequential,
            "--inline-checkpoints" => args.inline_checkpoints = true,
            "--sweep" => {
                args.sweep = match value("--sweep").as_str() {
                    "auto" => SweepMode::Auto,
                    "always" => SweepMode::Always,
                    "never" => SweepMode::Never,
                    other => panic!("--sweep auto|always|never, not {other}"),
                }
            }
            "--memory-child" => {
                let path = PathBuf::from(value("--memory-child"));
                let size = value("--memory-child").parse().expect("batch size");
                args.child = Some((path, size));
            }
            other => panic!("unknown argument {other}; see the file header for usage"),
        }
    }
    args
}

/// One measured configuration: `None` = single statement.
#[derive(Debug)]
struct Measure {
    seconds: f64,
    rows: u64,
    batches: u64,
    worst_batch_ms: f64,
    writer_worst_wait_ms: f64,
    writer_inserts: u64,
}

async fn measure(args: &Args, template: &Path, work: &Path, batch_size: Option<u32>) -> Measure {
    support::fresh_copy(template, work);
    let pool = support::open_pool_with(work, 1, &args.pragmas).await;
    let writer_pool = if args.shared_pool {
        pool.clone()
    } else {
        support::open_pool(work, 1).await
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = args
        .writer
        .then(|| tokio::spawn(support::concurrent_writer(writer_pool.clone(), stop_rx)));
    // Let the writer reach its steady rhythm first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let m = match batch_size {
        None => {
            let (rows, took) = support::single_delete(&pool).await;
            Measure {
                seconds: took.as_secs_f64(),
                rows,
                batches: 1,
                worst_batch_ms: took.as_secs_f64() * 1000.0,
                writer_worst_wait_ms: 0.0,
                writer_inserts: 0,
            }
        }
        Some(size) => {
            let r = support::batched_cleanup_with(
                &pool,
                size,
                args.pause,
                args.sweep,
                !args.inline_checkpoints,
            )
            .await;
            Measure {
                seconds: r.duration.as_secs_f64(),
                rows: r.total_cleaned,
                batches: r.batches,
                worst_batch_ms: r.slowest_batch.as_secs_f64() * 1000.0,
                writer_worst_wait_ms: 0.0,
                writer_inserts: 0,
            }
        }
    };
    // Without a writer nobody listens; with one, it stops after its current insert.
    let _ = stop_tx.send(true);
    let (worst, inserts) = match writer {
        Some(writer) => writer.await.expect("writer"),
        None => (Duration::ZERO, 0),
    };
    pool.close().await;
    writer_pool.close().await;
    Measure {
        writer_worst_wait_ms: worst.as_secs_f64() * 1000.0,
        writer_inserts: inserts,
        ..m
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    if let Some((path, size)) = &args.child {
        // Child: only the cleanup runs in this process, so its peak is the cleanup's.
        let pool = support::open_pool(path, 1).await;
        let report = support::batched_cleanup(&pool, *size).await;
        println!(
            "{} {}",
            report.total_cleaned,
            peak_rss_mib().unwrap_or(f64::NAN)
        );
        return;
    }

    let dir = std::env::temp_dir().join("token-cleanup-bench");
    let template = support::seed_template(&dir, args.tokens, args.hashes).await;
    let work = dir.join("example-work.db");

    let mut rows = Vec::new();
    let configs: Vec<Option<u32>> = std::iter::once(None)
        .chain(args.sizes.iter().copied().map(Some))
        .collect();
    for config in &configs {
        rows.push((*config, Vec::new()));
    }
    for _ in 0..args.runs {
        for (config, runs) in rows.iter_mut() {
            runs.push(measure(&args, &template, &work, *config).await);
        }
    }
    let baseline = median(rows[0].1.iter().map(|m| m.seconds).collect());

    let mut memory = Vec::new();
    if args.memory {
        let exe = std::env::current_exe().expect("current exe");
        for tokens in [100_000u64, 1_000_000] {
            let template = support::seed_template(&dir, tokens, args.hashes).await;
            let child_db = dir.join(format!("memory-{tokens}.db"));
            support::fresh_copy(&template, &child_db);
            let out = Command::new(&exe)
                .args(["--memory-child", &child_db.display().to_string(), "1000"])
                .output()
                .expect("run child");
            let text = String::from_utf8_lossy(&out.stdout);
            let mut parts = text.split_whitespace();
            let cleaned: u64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
            let peak: f64 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(f64::NAN);
            memory.push((tokens, cleaned, peak));
            support::remove_db(&child_db);
        }
    }
    support::remove_db(&work);

    if args.json {
        let results: Vec<_> = rows
            .iter()
            .map(|(config, runs)| {
                let secs = median(runs.iter().map(|m| m.seconds).collect());
                json!({
                    "batch_size": config,
                    "median_seconds": secs,
                    "rows_per_second": runs[0].rows as f64 / secs,
                    "ratio_to_single_statement": secs / baseline,
                    "rows": runs[0].rows,
                    "batches": runs[0].batches,
                    "worst_batch_ms": runs.iter().map(|m| m.worst_batch_ms).fold(0.0, f64::max),
                    "writer_worst_wait_ms": runs.iter().map(|m| m.writer_worst_wait_ms).fold(0.0, f64::max),
                    "writer_inserts": runs.iter().map(|m| m.writer_inserts).sum::<u64>(),
                })
            })
            .collect();
        let memory: Vec<_> = memory
            .iter()
            .map(|(tokens, cleaned, peak)| json!({"tokens": tokens, "cleaned": cleaned, "peak_rss_mib": peak}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "backend": "sqlite",
                "tokens": args.tokens,
                "runs": args.runs,
                "pause_ms": args.pause.as_secs_f64() * 1000.0,
                "pragmas": args.pragmas.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>(),
                "shared_pool": args.shared_pool,
                "token_hashes": format!("{:?}", args.hashes).to_lowercase(),
                "background_checkpoints": !args.inline_checkpoints,
                "sweep": format!("{:?}", args.sweep).to_lowercase(),
                "results": results,
                "memory": memory,
            }))
            .expect("json")
        );
        return;
    }

    println!(
        "SQLite (WAL), {} tokens, {:.0}% expired, {} token hashes, median of {} interleaved runs, sweep {:?}, {} checkpoints; {}{}{}\n",
        args.tokens,
        support::EXPIRED_FRACTION * 100.0,
        format!("{:?}", args.hashes).to_lowercase(),
        args.runs,
        args.sweep,
        if args.inline_checkpoints {
            "inline"
        } else {
            "background"
        },
        if !args.writer {
            "no concurrent writer"
        } else if args.shared_pool {
            "a writer sharing the cleanup's one-connection pool inserts every 2 ms"
        } else {
            "a second connection inserts every 2 ms"
        },
        if args.pause.is_zero() {
            String::new()
        } else {
            format!("; {:?} pause after each batch", args.pause)
        },
        args.pragmas
            .iter()
            .map(|(name, value)| format!("; cleanup PRAGMA {name}={value}"))
            .collect::<String>(),
    );
    println!(
        "| batch size | rows/s | time (s) | vs one DELETE | batches | worst batch (ms) | writer worst wait (ms) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for (config, runs) in &rows {
        let secs = median(runs.iter().map(|m| m.seconds).collect());
        let worst_batch = runs.iter().map(|m| m.worst_batch_ms).fold(0.0, f64::max);
        let wait = runs
            .iter()
            .map(|m| m.writer_worst_wait_ms)
            .fold(0.0, f64::max);
        let label = config.map_or("one DELETE".to_owned(), |s| s.to_string());
        println!(
            "| {label} | {:.0} | {secs:.3} | {:.2}x | {} | {worst_batch:.1} | {wait:.1} |",
            runs[0].rows as f64 / secs,
            secs / baseline,
            runs[0].batches,
        );
    }
    if !memory.is_empty() {
        println!("\nPeak memory of a cleanup process (batch 1000):");
        for (tokens, cleaned, peak) in &memory {
            println!("  {tokens:>9} tokens ({cleaned} expired removed): {peak:.1} MiB");
        }
    }
}
