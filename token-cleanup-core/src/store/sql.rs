//! Statement building shared by the SQL stores. Every identifier goes through sea-query
//! (validated by [`TokenTable`] first); every value is a bound parameter.
// Each backend uses a different subset of the builders.
#![cfg_attr(
    not(all(
        feature = "sqlite",
        feature = "postgres",
        feature = "mysql",
        feature = "test-util"
    )),
    allow(dead_code)
)]

#[cfg(feature = "mysql")]
use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Timelike, Utc};
#[cfg(feature = "mysql")]
use sea_query::Values;
use sea_query::{
    ColumnDef, Condition, DeleteStatement, Expr, ExprTrait, Func, Index, IndexCreateStatement,
    InsertStatement, OnConflict, Order, Query, SelectStatement, Table, TableCreateStatement,
    TableName, UpdateStatement, Value,
};

use super::{BatchFilter, Criterion, SweepMode};
#[cfg(feature = "mysql")]
use super::{Sweep, SweepOutcome};
use crate::run::{RunQuery, RunRecord};
use crate::table::{Ident, TimeFormat, TokenTable};

/// Name of the run records table (created next to the token table).
pub(crate) const RUNS_TABLE: &str = "token_cleanup_runs";
/// Name of the job lease table.
pub(crate) const LEASES_TABLE: &str = "token_cleanup_leases";

/// How instants are bound and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeEncoding {
    /// A native timestamp type (PostgreSQL `timestamptz`, MySQL `DATETIME(6)`).
    #[allow(dead_code)]
    Native,
    /// SQLite, in the table's representation.
    Sqlite(TimeFormat),
}

impl TimeEncoding {
    /// A value to compare a time column with, such that `column < value` holds exactly
    /// when the stored instant is before `at`.
    ///
    /// Text is bound with the shortest fraction (trailing zeros dropped): any stored
    /// spelling of the same instant has at least as many digits and so never sorts
    /// below it, which keeps a token expiring exactly at the cutoff.
    pub(crate) fn bound(self, at: DateTime<Utc>) -> Value {
        match self {
            TimeEncoding::Native => at.into(),
            TimeEncoding::Sqlite(format) => match format {
                TimeFormat::Rfc3339Text => format!("{}+00:00", minimal_text(at, 'T')).into(),
                TimeFormat::SqliteDatetimeText => minimal_text(at, ' ').into(),
                // `secs < ceil(at)` <=> `secs < at` for integer seconds.
                TimeFormat::UnixSeconds => {
                    let ceil = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
                    ceil.into()
                }
                TimeFormat::UnixMillis => {
                    let ceil = at.timestamp_millis()
                        + i64::from(!at.timestamp_subsec_nanos().is_multiple_of(1_000_000));
                    ceil.into()
                }
            },
        }
    }

    /// A value to store an instant in a time column (what sqlx and SQLite write).
    #[cfg_attr(not(feature = "test-util"), allow(dead_code))]
    pub(crate) fn stored(self, at: DateTime<Utc>) -> Value {
        match self {
            TimeEncoding::Native => at.into(),
            TimeEncoding::Sqlite(format) => match format {
                TimeFormat::Rfc3339Text => at.to_rfc3339_opts(SecondsFormat::AutoSi, false).into(),
                TimeFormat::SqliteDatetimeText => at.format("%F %T%.f").to_string().into(),
                TimeFormat::UnixSeconds => at.timestamp().into(),
                TimeFormat::UnixMillis => at.timestamp_millis().into(),
            },
        }
    }

    /// Whether the column holds integers.
    pub(crate) fn is_integer(self) -> bool {
        matches!(
            self,
            TimeEncoding::Sqlite(TimeFormat::UnixSeconds | TimeFormat::UnixMillis)
        )
    }
}

/// `YYYY-MM-DD<sep>HH:MM:SS[.fraction]` with the fraction's trailing zeros removed.
fn minimal_text(at: DateTime<Utc>, sep: char) -> String {
    let mut s = at.format(&format!("%Y-%m-%d{sep}%H:%M:%S")).to_string();
    let nanos = at.nanosecond() % 1_000_000_000;
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s
}

/// Parses a stored instant back (SQLite text or integers).
pub(crate) fn parse_sqlite_time(
    format: TimeFormat,
    text: Option<String>,
    int: Option<i64>,
) -> Option<DateTime<Utc>> {
    match format {
        TimeFormat::UnixSeconds => int.and_then(|s| DateTime::from_timestamp(s, 0)),
        TimeFormat::UnixMillis => int.and_then(DateTime::from_timestamp_millis),
        TimeFormat::Rfc3339Text | TimeFormat::SqliteDatetimeText => {
            let text = text?;
            DateTime::parse_from_rfc3339(&text)
                .map(|d| d.with_timezone(&Utc))
                .ok()
                .or_else(|| {
                    chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S%.f")
                        .ok()
                        .map(|n| n.and_utc())
                })
        }
    }
}

/// Statement builders for one token table.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    pub(crate) table: TokenTable,
    pub(crate) time: TimeEncoding,
}

fn col(ident: &Ident) -> String {
    ident.as_str().to_owned()
}

impl Statements {
    pub(crate) fn new(table: TokenTable, time: TimeEncoding) -> Self {
        Self { table, time }
    }

    pub(crate) fn token_table(&self) -> TableName {
        self.named(self.table.table().as_str())
    }

    /// A table of ours, in the token table's schema.
    pub(crate) fn named(&self, name: &str) -> TableName {
        match self.table.schema() {
            Some(schema) => TableName::from((col(schema), name.to_owned())),
            None => TableName::from(name.to_owned()),
        }
    }

    fn id(&self) -> String {
        col(self.table.id_column())
    }
    fn ty(&self) -> String {
        col(self.table.type_column())
    }
    fn exp(&self) -> String {
        col(self.table.expires_column())
    }
    fn used(&self) -> Option<String> {
        self.table.used_column().map(col)
    }

    /// The column a criterion orders and resumes by.
    pub(crate) fn key_column(&self, criterion: &Criterion) -> String {
        match criterion {
            Criterion::Expired { .. } => self.exp(),
            Criterion::Used { .. } => self.used().unwrap_or_else(|| self.exp()),
        }
    }

    /// `type = ? AND <criterion> [AND key >= resume]`.
    pub(crate) fn condition(&self, filter: &BatchFilter) -> Condition {
        let mut cond = Condition::all().add(Expr::col(self.ty()).eq(filter.token_type.as_str()));
        cond = match filter.criterion {
            Criterion::Expired { before } => {
                cond.add(Expr::col(self.exp()).lt(self.time.bound(before)))
            }
            Criterion::Used {
                before,
                not_expired_before,
            } => {
                // Validated by the engine: `include_used` needs a used-at column.
                let used = self.used().unwrap_or_else(|| self.exp());
                cond.add(Expr::col(used).lt(self.time.bound(before)))
                    .add(Expr::col(self.exp()).gte(self.time.bound(not_expired_before)))
            }
        };
        if let Some(resume) = filter.resume_from {
            cond = cond.add(
                Expr::col(self.key_column(&filter.criterion))
                    .gte(self.time.stored_lower_bound(resume)),
            );
        }
        cond
    }

    /// `SELECT id FROM t WHERE <filter> ORDER BY key LIMIT n`.
    pub(crate) fn select_batch_ids(&self, filter: &BatchFilter, limit: u32) -> SelectStatement {
        Query::select()
            .column(self.id())
            .from(self.token_table())
            .cond_where(self.condition(filter))
            .order_by(self.key_column(&filter.criterion), Order::Asc)
            .limit(u64::from(limit))
            .to_owned()
    }

    /// `DELETE FROM t WHERE id IN (SELECT id .. LIMIT n)` (PostgreSQL, SQLite).
    pub(crate) fn delete_in(&self, filter: &BatchFilter, limit: u32) -> DeleteStatement {
        Query::delete()
            .from_table(self.token_table())
            .and_where(Expr::col(self.id()).in_subquery(self.select_batch_ids(filter, limit)))
            .to_owned()
    }

    /// `SELECT DISTINCT type FROM t ORDER BY type`.
    pub(crate) fn distinct_types(&self) -> SelectStatement {
        Query::select()
            .distinct()
            .column(self.ty())
            .from(self.token_table())
            .order_by(self.ty(), Order::Asc)
            .to_owned()
    }

    /// Every id, ascending (tests).
    #[cfg(feature = "test-util")]
    pub(crate) fn select_ids(&self) -> SelectStatement {
        Query::select()
            .column(self.id())
            .from(self.token_table())
            .order_by(self.id(), Order::Asc)
            .to_owned()
    }

    /// Inserts tokens into a table created by `migrate()` (tests, benchmarks).
    #[cfg(feature = "test-util")]
    pub(crate) fn insert_tokens(&self, tokens: &[super::Token]) -> InsertStatement {
        let mut columns = vec![self.id(), self.ty(), "token_hash".to_owned(), self.exp()];
        if let Some(used) = self.used() {
            columns.push(used);
        }
        let mut insert = Query::insert();
        insert.into_table(self.token_table()).columns(columns);
        for t in tokens {
            let mut row: Vec<Expr> = vec![
                t.id.into(),
                t.token_type.as_str().into(),
                format!("hash-{}", t.id).into(),
                Expr::val(self.time.stored(t.expires_at)),
            ];
            if self.used().is_some() {
                row.push(match t.used_at {
                    Some(u) => Expr::val(self.time.stored(u)),
                    None => Expr::null(),
                });
            }
            insert.values_panic(row);
        }
        insert
    }

    /// `SELECT COUNT(*) FROM t WHERE <filter>`.
    pub(crate) fn count(&self, filter: &BatchFilter) -> SelectStatement {
        Query::select()
            .expr(Expr::col(sea_query::Asterisk).count())
            .from(self.token_table())
            .cond_where(self.condition(filter))
            .to_owned()
    }

    /// One grouped scan: type, total, expired, used, active, min(expired expiry).
    pub(crate) fn type_counts(&self, now: DateTime<Utc>) -> SelectStatement {
        let now = self.time.bound(now);
        let expired = Expr::col(self.exp()).lt(now.clone());
        // COUNT(CASE .. THEN 1 END) rather than SUM: an integer on every backend (MySQL's
        // SUM returns DECIMAL).
        let flag = |cond: Expr| Func::count(Expr::case(cond, 1).finally(Expr::null())).into();
        let (used_expr, active_expr): (Expr, Expr) = match self.used() {
            Some(used) => (
                flag(Expr::col(used.clone()).is_not_null()),
                flag(
                    Expr::col(self.exp())
                        .gte(now.clone())
                        .and(Expr::col(used).is_null()),
                ),
            ),
            None => (Expr::val(0), flag(Expr::col(self.exp()).gte(now.clone()))),
        };
        Query::select()
            .column(self.ty())
            .expr(Expr::col(sea_query::Asterisk).count())
            .expr(flag(expired.clone()))
            .expr(used_expr)
            .expr(active_expr)
            .expr(Func::min(
                Expr::case(expired, Expr::col(self.exp())).finally(Expr::null()),
            ))
            .from(self.token_table())
            .group_by_col(self.ty())
            .order_by(self.ty(), Order::Asc)
            .to_owned()
    }

    /// Index that keeps the expired-token batches an index range scan.
    pub(crate) fn expiry_index(&self) -> IndexCreateStatement {
        Index::create()
            .if_not_exists()
            .name(index_name(self.table.table().as_str(), "type_expires"))
            .table(self.token_table())
            .col(self.ty())
            .col(self.exp())
            .to_owned()
    }

    /// Index for the used-token pass, if the table has a used-at column.
    pub(crate) fn used_index(&self) -> Option<IndexCreateStatement> {
        self.used().map(|used| {
            Index::create()
                .if_not_exists()
                .name(index_name(self.table.table().as_str(), "type_used"))
                .table(self.token_table())
                .col(self.ty())
                .col(used)
                .to_owned()
        })
    }

    /// The default token table, for new applications.
    pub(crate) fn create_token_table(
        &self,
        id: ColumnDef,
        time_type: impl Fn(&str) -> ColumnDef,
    ) -> TableCreateStatement {
        let mut t = Table::create();
        t.table(self.token_table())
            .if_not_exists()
            .col(id)
            .col(ColumnDef::new(self.ty()).string_len(64).not_null())
            .col(
                ColumnDef::new("token_hash")
                    .string_len(128)
                    .not_null()
                    .unique_key(),
            )
            .col(ColumnDef::new("subject").string_len(255).null())
            .col(time_type(self.exp().as_str()).not_null())
            .col(time_type("created_at").null());
        if let Some(used) = self.used() {
            t.col(time_type(&used).null());
        }
        t.to_owned()
    }

    /// Run records: id, creation time (ms since epoch), status and the JSON record.
    pub(crate) fn create_runs_table(&self) -> TableCreateStatement {
        Table::create()
            .table(self.named(RUNS_TABLE))
            .if_not_exists()
            .col(ColumnDef::new("id").string_len(36).not_null().primary_key())
            .col(ColumnDef::new("created_at").big_integer().not_null())
            .col(ColumnDef::new("status").string_len(16).not_null())
            .col(ColumnDef::new("record").text().not_null())
            .to_owned()
    }

    pub(crate) fn runs_index(&self) -> IndexCreateStatement {
        Index::create()
            .if_not_exists()
            .name(index_name(RUNS_TABLE, "created"))
            .table(self.named(RUNS_TABLE))
            .col("created_at")
            .to_owned()
    }

    /// Job leases: name, holder and expiry (ms since epoch).
    pub(crate) fn create_leases_table(&self) -> TableCreateStatement {
        Table::create()
            .table(self.named(LEASES_TABLE))
            .if_not_exists()
            .col(
                ColumnDef::new("name")
                    .string_len(191)
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new("holder").string_len(191).not_null())
            .col(ColumnDef::new("expires_at").big_integer().not_null())
            .to_owned()
    }

    pub(crate) fn insert_run(&self, run: &RunRecord) -> InsertStatement {
        let (id, created_at, status, record) = run_row(run);
        Query::insert()
            .into_table(self.named(RUNS_TABLE))
            .columns(["id", "created_at", "status", "record"])
            .values_panic([id.into(), created_at.into(), status.into(), record.into()])
            .to_owned()
    }

    pub(crate) fn update_run(&self, run: &RunRecord) -> UpdateStatement {
        let (id, _, status, record) = run_row(run);
        Query::update()
            .table(self.named(RUNS_TABLE))
            .values([("status", status.into()), ("record", record.into())])
            .and_where(Expr::col("id").eq(id))
            .to_owned()
    }

    pub(crate) fn select_run(&self, id: uuid::Uuid) -> SelectStatement {
        Query::select()
            .column("record")
            .from(self.named(RUNS_TABLE))
            .and_where(Expr::col("id").eq(id.to_string()))
            .to_owned()
    }

    pub(crate) fn select_runs(&self, query: &RunQuery) -> SelectStatement {
        select_runs(self.named(RUNS_TABLE), query)
    }

    /// Takes or renews a lease unless someone else holds an unexpired one
    /// (`INSERT .. ON CONFLICT .. DO UPDATE .. WHERE`, PostgreSQL and SQLite).
    pub(crate) fn upsert_lease(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        until_ms: i64,
    ) -> InsertStatement {
        Query::insert()
            .into_table(self.named(LEASES_TABLE))
            .columns(["name", "holder", "expires_at"])
            .values_panic([name.into(), holder.into(), until_ms.into()])
            .on_conflict(
                OnConflict::column("name")
                    .update_columns(["holder", "expires_at"])
                    .action_and_where(
                        Expr::col((LEASES_TABLE, "expires_at"))
                            .lt(now_ms)
                            .or(Expr::col((LEASES_TABLE, "holder")).eq(holder)),
                    )
                    .to_owned(),
            )
            .to_owned()
    }

    pub(crate) fn release_lease(&self, name: &str, holder: &str) -> DeleteStatement {
        Query::delete()
            .from_table(self.named(LEASES_TABLE))
            .and_where(Expr::col("name").eq(name))
            .and_where(Expr::col("holder").eq(holder))
            .to_owned()
    }
}

impl TimeEncoding {
    /// Lower bound for resuming: inclusive, so in stored form (not rounded up).
    fn stored_lower_bound(self, at: DateTime<Utc>) -> Value {
        match self {
            TimeEncoding::Sqlite(TimeFormat::UnixSeconds) => at.timestamp().into(),
            TimeEncoding::Sqlite(TimeFormat::UnixMillis) => at.timestamp_millis().into(),
            other => other.bound(at),
        }
    }
}

/// Identifiers quoted for SQL that sea-query cannot express (CTEs with data-modifying
/// statements, locking clauses). Every name was validated by [`Ident`] (ASCII letters,
/// digits, `_`), and the quote character is doubled anyway.
#[derive(Debug, Clone)]
pub(crate) struct QuotedNames {
    /// The token table, schema-qualified when a schema is set.
    pub(crate) table: String,
    /// A table of ours (runs, leases), schema-qualified like the token table.
    pub(crate) leases: String,
    pub(crate) id: String,
    pub(crate) ty: String,
    pub(crate) exp: String,
    pub(crate) used: Option<String>,
}

/// `name` between `q`s, with `q` doubled inside.
pub(crate) fn quote(name: &str, q: char) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push(q);
    for c in name.chars() {
        if c == q {
            out.push(q);
        }
        out.push(c);
    }
    out.push(q);
    out
}

impl Statements {
    /// Quoted names for hand-written statements (`q` is `"` or `` ` ``).
    pub(crate) fn quoted(&self, q: char) -> QuotedNames {
        let qualify = |name: &str| match self.table.schema() {
            Some(schema) => format!("{}.{}", quote(schema.as_str(), q), quote(name, q)),
            None => quote(name, q),
        };
        QuotedNames {
            table: qualify(self.table.table().as_str()),
            leases: qualify(LEASES_TABLE),
            id: quote(self.table.id_column().as_str(), q),
            ty: quote(self.table.type_column().as_str(), q),
            exp: quote(self.table.expires_column().as_str(), q),
            used: self.table.used_column().map(|u| quote(u.as_str(), q)),
        }
    }
}

impl Statements {
    /// The row condition of a MySQL sweep over `filters` (expired criteria, one per type):
    /// `(type IN (..) AND expires_at < ..) OR ..`, one group per distinct cutoff. Each
    /// value goes through `param`, which returns its placeholder (or literal).
    #[cfg(feature = "mysql")]
    pub(crate) fn sweep_condition(
        &self,
        names: &QuotedNames,
        filters: &[BatchFilter],
        mut param: impl FnMut(Value) -> String,
    ) -> String {
        let mut groups: BTreeMap<DateTime<Utc>, Vec<&str>> = BTreeMap::new();
        for f in filters {
            if let Criterion::Expired { before } = f.criterion {
                groups.entry(before).or_default().push(&f.token_type);
            }
        }
        let parts: Vec<String> = groups
            .into_iter()
            .map(|(cutoff, types)| {
                let types: Vec<String> = types.into_iter().map(|t| param(t.into())).collect();
                let cutoff = param(self.time.bound(cutoff));
                format!(
                    "({} IN ({}) AND {} < {cutoff})",
                    names.ty,
                    types.join(", "),
                    names.exp
                )
            })
            .collect();
        if parts.is_empty() {
            "FALSE".to_owned()
        } else {
            parts.join(" OR ")
        }
    }

    /// `SELECT COUNT(*) FROM (SELECT 1 FROM t WHERE <filter> LIMIT cap)`: a count that
    /// stops at `cap`.
    pub(crate) fn count_capped(&self, filter: &BatchFilter, cap: u64) -> SelectStatement {
        Query::select()
            .expr(Expr::col(sea_query::Asterisk).count())
            .from_subquery(
                Query::select()
                    .expr(Expr::val(1))
                    .from(self.token_table())
                    .cond_where(self.condition(filter))
                    .limit(cap)
                    .to_owned(),
                sea_query::Alias::new("capped"),
            )
            .to_owned()
    }
}

/// The values of a sweep statement: the key range `(sweep.position, hi]`, the condition's
/// `values`, then the probe's `limit` (MySQL's sweeps).
#[cfg(feature = "mysql")]
pub(crate) fn sweep_args(sweep: &Sweep, hi: i64, values: &[Value], limit: Option<u32>) -> Values {
    let mut args = vec![Value::from(sweep.position), Value::from(hi)];
    args.extend(values.iter().cloned());
    args.extend(limit.map(Value::from));
    Values(args)
}

/// What a MySQL sweep probe found: rows `(type, count, last key)`, one per type.
#[cfg(feature = "mysql")]
pub(crate) struct SweepProbe {
    deleted: Vec<(String, u64)>,
    counted: u64,
    /// The last key of the batch; `None` when nothing is left to delete.
    pub(crate) hi: Option<i64>,
}

#[cfg(feature = "mysql")]
impl SweepProbe {
    pub(crate) fn new(rows: Vec<(String, i64, i64)>) -> Self {
        let hi = rows.iter().map(|(_, _, last)| *last).max();
        let deleted: Vec<(String, u64)> = rows
            .into_iter()
            .map(|(token_type, n, _)| (token_type, u64::try_from(n).unwrap_or(0)))
            .collect();
        let counted = deleted.iter().map(|(_, n)| n).sum();
        Self {
            deleted,
            counted,
            hi,
        }
    }

    /// The outcome of a batch whose `DELETE` removed `removed` rows up to `hi`, its probe
    /// having examined the keys up to `examined_to` when it found fewer than `limit` rows,
    /// or an error (the caller rolls back) when that is not what the probe counted:
    /// reported counts are always what left the table.
    pub(crate) fn outcome(
        self,
        store: &'static str,
        sweep: &Sweep,
        (hi, examined_to): (i64, i64),
        removed: u64,
        limit: u32,
    ) -> crate::Result<SweepOutcome> {
        if removed != self.counted {
            return Err(crate::Error::store(
                store,
                "delete a sweep batch",
                format!(
                    "deleted {removed} rows where the probe counted {}; rolled back",
                    self.counted
                ),
            ));
        }
        // A full batch stopped at `hi`; a short one looked at every key up to `examined_to`.
        let position = if self.counted < u64::from(limit) {
            Ord::max(examined_to, hi)
        } else {
            hi
        };
        Ok(SweepOutcome {
            done: position >= sweep.end,
            deleted: self.deleted,
            position,
        })
    }

    /// The outcome when the probe found nothing up to `examined_to`: the sweep is done
    /// when that is its end, else (after a long run of live tokens) the engine gets a
    /// batch boundary to stop at, when asked, before the sweep reads on.
    pub(crate) fn nothing_found(sweep: &Sweep, examined_to: i64) -> SweepOutcome {
        SweepOutcome {
            deleted: Vec::new(),
            position: examined_to,
            done: examined_to >= sweep.end,
        }
    }
}

/// Whether `mode` sweeps a table of about `rows` rows for `filters`: for
/// [`SweepMode::Auto`], counts (with `count(filter, cap)`) the expired rows only until
/// the threshold is reached.
pub(crate) async fn sweep_pays<F, Fut>(
    mode: SweepMode,
    filters: &[BatchFilter],
    rows: u64,
    mut count: F,
) -> crate::Result<bool>
where
    F: FnMut(&BatchFilter, u64) -> Fut,
    Fut: std::future::Future<Output = crate::Result<u64>>,
{
    if mode != SweepMode::Auto {
        return Ok(mode.sweeps(0, rows));
    }
    let needed = SweepMode::sweep_threshold(rows);
    let mut found = 0;
    for filter in filters {
        if found >= needed {
            break;
        }
        found += count(filter, needed - found).await?;
    }
    Ok(mode.sweeps(found, rows))
}

/// Binds a batch condition's type and cutoffs in the order every store numbers them: the
/// type, the criterion's cutoff, then the used criterion's expiry bound.
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) fn bind_criterion<'q, DB>(
    q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    filter: &BatchFilter,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    String: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    DateTime<Utc>: for<'t> sqlx::Encode<'t, DB> + sqlx::Type<DB>,
{
    let q = q.bind(filter.token_type.clone());
    match filter.criterion {
        Criterion::Expired { before } => q.bind(before),
        Criterion::Used {
            before,
            not_expired_before,
        } => q.bind(before).bind(not_expired_before),
    }
}

/// A stable 32-bit FNV-1a hash, for advisory lock keys derived from names.
pub(crate) fn fnv1a32(parts: &[&str]) -> i32 {
    let mut hash: u32 = 0x811c_9dc5;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0)) {
            hash ^= u32::from(b);
            hash = hash.wrapping_mul(0x0100_0193);
        }
    }
    hash as i32
}

/// `<table>_<suffix>_idx`, cut to 63 bytes (still a valid identifier).
pub(crate) fn index_name(table: &str, suffix: &str) -> String {
    let mut name = format!("{table}_{suffix}_idx");
    name.truncate(63);
    name
}

/// Columns of the runs table: `id`, `created_at` (ms), `status`, `record` (JSON).
pub(crate) fn run_row(run: &RunRecord) -> (String, i64, &'static str, String) {
    (
        run.id.to_string(),
        run.created_at.timestamp_millis(),
        run.status.as_str(),
        serde_json::to_string(run).expect("run records always serialize"),
    )
}

/// `SELECT record FROM runs WHERE ... ORDER BY created_at DESC, id DESC LIMIT n`.
pub(crate) fn select_runs(table: TableName, query: &RunQuery) -> SelectStatement {
    let mut q = Query::select();
    q.column("record").from(table);
    if let Some(since) = query.since {
        q.and_where(Expr::col("created_at").gte(since.timestamp_millis()));
    }
    if let Some(until) = query.until {
        q.and_where(Expr::col("created_at").lt(until.timestamp_millis()));
    }
    if let Some(status) = query.status {
        q.and_where(Expr::col("status").eq(status.as_str()));
    }
    q.order_by("created_at", Order::Desc)
        .order_by("id", Order::Desc);
    if let Some(limit) = query.limit {
        q.limit(u64::from(limit));
    }
    q.to_owned()
}

/// Decodes a stored record.
pub(crate) fn parse_run(store: &'static str, json: &str) -> crate::Result<RunRecord> {
    serde_json::from_str(json).map_err(|e| crate::Error::store(store, "decode a run record", e))
}

/// Implements [`RunStore`](super::RunStore) for a SQL store: run records through the
/// shared [`Statements`], stored as JSON text, and lease release; taking a lease
/// (`$lease`) differs per database and comes from the store.
///
/// Expects at the call site: `STORE`, `err`, and on the store the fields `sql` and
/// `pool` and the method `execute(&stmt, operation)`.
macro_rules! sql_run_store {
    ($store:ty, $builder:expr, $($lease:item),* $(,)?) => {
        #[async_trait::async_trait]
        impl super::RunStore for $store {
            async fn insert_run(&self, run: &crate::run::RunRecord) -> crate::error::Result<()> {
                self.execute(&self.sql.insert_run(run), "insert a run record")
                    .await
                    .map(drop)
            }

            async fn update_run(&self, run: &crate::run::RunRecord) -> crate::error::Result<()> {
                self.execute(&self.sql.update_run(run), "update a run record")
                    .await
                    .map(drop)
            }

            async fn run(
                &self,
                id: uuid::Uuid,
            ) -> crate::error::Result<Option<crate::run::RunRecord>> {
                let (sql, values) =
                    sea_query_sqlx::SqlxBinder::build_sqlx(&self.sql.select_run(id), $builder);
                let json: Option<String> =
                    sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), values)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(err("read a run record"))?;
                json.map(|j| super::sql::parse_run(STORE, &j)).transpose()
            }

            async fn runs(
                &self,
                query: &crate::run::RunQuery,
            ) -> crate::error::Result<Vec<crate::run::RunRecord>> {
                let (sql, values) = sea_query_sqlx::SqlxBinder::build_sqlx(
                    &self.sql.select_runs(query),
                    $builder,
                );
                let rows: Vec<String> = sqlx::query_scalar_with(sqlx::AssertSqlSafe(sql), values)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(err("list run records"))?;
                rows.iter()
                    .map(|j| super::sql::parse_run(STORE, j))
                    .collect()
            }

            async fn release_lease(&self, name: &str, holder: &str) -> crate::error::Result<()> {
                self.execute(&self.sql.release_lease(name, holder), "release a lease")
                    .await
                    .map(drop)
            }

            $($lease)*
        }
    };
}
pub(crate) use sql_run_store;

/// One row of [`Statements::type_counts`]: the type, then the total, expired, used and
/// active counts (a `NULL` sum is 0). The oldest expiry (column 5) is stored differently
/// per database, so the caller decodes it.
pub(crate) fn decode_type_counts<R>(
    store: &'static str,
    row: &R,
    oldest_expired: Option<DateTime<Utc>>,
) -> crate::Result<super::TypeCounts>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let decode = |e| crate::Error::store(store, "decode token counts", e);
    let count = |i: usize| -> crate::Result<u64> {
        row.try_get::<Option<i64>, _>(i)
            .map(|v| Ord::max(v.unwrap_or(0), 0) as u64)
            .map_err(decode)
    };
    Ok(super::TypeCounts {
        token_type: row.try_get(0).map_err(decode)?,
        total: count(1)?,
        expired: count(2)?,
        used: count(3)?,
        active: count(4)?,
        oldest_expired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn bounds_use_the_shortest_fraction() {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let enc = TimeEncoding::Sqlite(TimeFormat::Rfc3339Text);
        assert_eq!(enc.bound(at), Value::from("2026-01-02T03:04:05+00:00"));
        let half = at + chrono::TimeDelta::milliseconds(500);
        assert_eq!(enc.bound(half), Value::from("2026-01-02T03:04:05.5+00:00"));
        let enc = TimeEncoding::Sqlite(TimeFormat::SqliteDatetimeText);
        assert_eq!(enc.bound(half), Value::from("2026-01-02 03:04:05.5"));
        let enc = TimeEncoding::Sqlite(TimeFormat::UnixSeconds);
        assert_eq!(enc.bound(at), Value::from(at.timestamp()));
        assert_eq!(enc.bound(half), Value::from(at.timestamp() + 1));
        let enc = TimeEncoding::Sqlite(TimeFormat::UnixMillis);
        let micro = half + chrono::TimeDelta::microseconds(1);
        assert_eq!(enc.bound(micro), Value::from(half.timestamp_millis() + 1));
    }
}
