//! Property: for random token sets, types, cutoffs and batch sizes, a run removes exactly
//! the expired tokens of the chosen types, on the memory store and on SQLite (in every
//! time representation, sweeping or type by type).

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use proptest::prelude::*;
use sqlx::sqlite::SqlitePoolOptions;
use token_cleanup_core::test_util::suite::exactly_expired_of_chosen_types_go;
use token_cleanup_core::{
    MemoryStore, SqliteStore, SweepMode, TimeFormat, Token, TokenStore, TokenTable,
};

const TYPES: [&str; 5] = [
    "email_verification",
    "password_reset",
    "magic_link",
    "invite",
    "x",
];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()
}

/// Expiries within +-2 days of the base, at millisecond resolution so that many land on
/// the same second as the cutoff.
fn tokens() -> impl Strategy<Value = Vec<Token>> {
    prop::collection::vec(
        (
            0..TYPES.len(),
            -172_800_000i64..172_800_000,
            prop::bool::ANY,
        ),
        0..300,
    )
    .prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(i, (ty, ms, used))| {
                let exp = base() + TimeDelta::milliseconds(ms);
                let t = Token::new(i as i64 + 1, TYPES[ty], exp);
                if used {
                    t.used(exp - TimeDelta::minutes(5))
                } else {
                    t
                }
            })
            .collect()
    })
}

fn case() -> impl Strategy<Value = (Vec<Token>, Vec<String>, DateTime<Utc>, u32, usize)> {
    (
        tokens(),
        prop::sample::subsequence(TYPES.to_vec(), 1..=TYPES.len()),
        -100_000_000i64..100_000_000,
        prop_oneof![1u32..5, 5u32..100, Just(1000u32), Just(50_000u32)],
        0usize..4,
    )
        .prop_map(|(tokens, types, cutoff_ms, batch, format)| {
            let types = types.into_iter().map(String::from).collect();
            (
                tokens,
                types,
                base() + TimeDelta::milliseconds(cutoff_ms),
                batch,
                format,
            )
        })
}

async fn sqlite(format: TimeFormat, sweep: SweepMode) -> Arc<SqliteStore> {
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .connect("sqlite::memory:")
        .await
        .unwrap();
    let table = TokenTable::builder().time_format(format).build().unwrap();
    let store = Arc::new(SqliteStore::new(pool, table).sweep(sweep));
    store.migrate().await.unwrap();
    store
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn memory_store_removes_exactly_the_expired((tokens, types, cutoff, batch, _) in case()) {
        runtime().block_on(exactly_expired_of_chosen_types_go(
            Arc::new(MemoryStore::new()), tokens, types, cutoff, batch,
        ));
    }

    #[test]
    fn sqlite_store_removes_exactly_the_expired(
        (tokens, types, cutoff, batch, format) in case(),
        sweep in prop_oneof![Just(SweepMode::Always), Just(SweepMode::Never), Just(SweepMode::Auto)],
    ) {
        let format = [
            TimeFormat::Rfc3339Text,
            TimeFormat::SqliteDatetimeText,
            TimeFormat::UnixSeconds,
            TimeFormat::UnixMillis,
        ][format];
        runtime().block_on(async {
            let store = sqlite(format, sweep).await;
            exactly_expired_of_chosen_types_go(store, tokens, types, cutoff, batch).await
        });
    }
}
