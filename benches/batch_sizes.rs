//! Criterion: the same SQLite table cleaned at batch sizes 100 .. 10,000 against a
//! single-statement `DELETE` baseline.
//!
//! ```sh
//! cargo bench --bench batch_sizes --features sqlite
//! ```
//!
//! Each iteration runs on a fresh copy of a seeded template (copying is not timed). The
//! table has 50,000 tokens, 80% expired, token hashes in random order;
//! `examples/bench_batch_sizes.rs` measures the 500,000-token case, writer latency and
//! memory.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

mod support;

const TOKENS: u64 = 50_000;
const BATCH_SIZES: [u32; 6] = [100, 500, 1000, 2000, 5000, 10_000];

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = std::env::temp_dir().join("token-cleanup-bench");
    let template = rt.block_on(support::seed_template(
        &dir,
        TOKENS,
        support::Hashes::Random,
    ));
    let work = dir.join("criterion-work.db");

    let mut group = c.benchmark_group(format!("sqlite_cleanup_{TOKENS}_tokens"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));

    group.bench_function("single_delete", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (template, work) = (template.clone(), work.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    support::fresh_copy(&template, &work);
                    let pool = support::open_pool(&work, 1).await;
                    total += support::single_delete(&pool).await.1;
                    pool.close().await;
                }
                total
            }
        })
    });

    for batch_size in BATCH_SIZES {
        group.bench_with_input(
            BenchmarkId::new("batched", batch_size),
            &batch_size,
            |b, &size| {
                b.to_async(&rt).iter_custom(|iters| {
                    let (template, work) = (template.clone(), work.clone());
                    async move {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            support::fresh_copy(&template, &work);
                            let pool = support::open_pool(&work, 1).await;
                            let started = Instant::now();
                            let report = support::batched_cleanup(&pool, size).await;
                            total += started.elapsed();
                            assert!(report.total_cleaned >= support::expected_expired(TOKENS));
                            pool.close().await;
                        }
                        total
                    }
                })
            },
        );
    }
    group.finish();
    support::remove_db(&work);
}

criterion_group!(benches, bench);
criterion_main!(benches);
