//! In-process store for tests and examples.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{BatchFilter, BatchOutcome, Criterion, RunStore, Token, TokenStore, TypeCounts};
use crate::error::{Error, Result};
use crate::run::{RunQuery, RunRecord};
use crate::table::TokenTable;

/// A [`TokenStore`] and [`RunStore`] in memory. Batches are atomic like a transaction.
///
/// ```
/// use chrono::{Duration, Utc};
/// use token_cleanup_core::{MemoryStore, Token};
///
/// let store = MemoryStore::new();
/// store.insert([Token::new(1, "invite", Utc::now() - Duration::days(1))]);
/// assert_eq!(store.tokens().len(), 1);
/// ```
#[derive(Debug, Default)]
pub struct MemoryStore {
    table: TokenTable,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    tokens: BTreeMap<i64, Token>,
    runs: BTreeMap<Uuid, RunRecord>,
    leases: HashMap<String, (String, Instant)>,
    /// Ids whose deletion makes a batch fail (fault injection for tests).
    poisoned: HashSet<i64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-updated: every mutation
        // below is computed first and applied without fallible steps.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds or replaces tokens.
    pub fn insert(&self, tokens: impl IntoIterator<Item = Token>) {
        let mut state = self.state();
        for token in tokens {
            state.tokens.insert(token.id, token);
        }
    }

    /// A snapshot of every token, by id.
    pub fn tokens(&self) -> Vec<Token> {
        self.state().tokens.values().cloned().collect()
    }

    /// Makes every batch that would delete `id` fail without deleting anything.
    pub fn fail_deleting(&self, id: i64) {
        self.state().poisoned.insert(id);
    }

    /// Removes all injected failures.
    pub fn clear_failures(&self) {
        self.state().poisoned.clear();
    }

    fn ordered_matches<'a>(
        tokens: &'a BTreeMap<i64, Token>,
        filter: &BatchFilter,
    ) -> Vec<(DateTime<Utc>, &'a Token)> {
        let mut hits: Vec<_> = tokens
            .values()
            .filter(|t| t.matches(filter))
            .map(|t| {
                let key = match filter.criterion {
                    Criterion::Expired { .. } => t.expires_at,
                    Criterion::Used { .. } => t.used_at.unwrap_or(t.expires_at),
                };
                (key, t)
            })
            .collect();
        hits.sort_by_key(|(key, t)| (*key, t.id));
        hits
    }
}

#[async_trait]
impl TokenStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn table(&self) -> &TokenTable {
        &self.table
    }

    async fn migrate(&self) -> Result<()> {
        Ok(())
    }

    async fn token_types(&self) -> Result<Vec<String>> {
        let state = self.state();
        let types: std::collections::BTreeSet<_> = state
            .tokens
            .values()
            .map(|t| t.token_type.clone())
            .collect();
        Ok(types.into_iter().collect())
    }

    async fn count(&self, filter: &BatchFilter) -> Result<u64> {
        let state = self.state();
        Ok(state.tokens.values().filter(|t| t.matches(filter)).count() as u64)
    }

    async fn delete_batch(&self, filter: &BatchFilter, limit: u32) -> Result<BatchOutcome> {
        let mut state = self.state();
        let batch: Vec<(DateTime<Utc>, i64)> = Self::ordered_matches(&state.tokens, filter)
            .into_iter()
            .take(limit as usize)
            .map(|(key, t)| (key, t.id))
            .collect();
        if let Some((_, id)) = batch.iter().find(|(_, id)| state.poisoned.contains(id)) {
            return Err(Error::store(
                "memory",
                "delete a batch",
                format!("injected failure deleting token {id}"),
            ));
        }
        for (_, id) in &batch {
            state.tokens.remove(id);
        }
        Ok(BatchOutcome {
            deleted: batch.len() as u64,
            resume_from: batch.last().map(|(key, _)| *key),
            more: false,
        })
    }

    async fn type_counts(&self, now: DateTime<Utc>) -> Result<Vec<TypeCounts>> {
        let state = self.state();
        let mut by_type: BTreeMap<&str, TypeCounts> = BTreeMap::new();
        for t in state.tokens.values() {
            let c = by_type.entry(&t.token_type).or_insert_with(|| TypeCounts {
                token_type: t.token_type.clone(),
                total: 0,
                expired: 0,
                active: 0,
                used: 0,
                oldest_expired: None,
            });
            c.total += 1;
            let expired = t.expires_at < now;
            if expired {
                c.expired += 1;
                c.oldest_expired = Some(
                    c.oldest_expired
                        .map_or(t.expires_at, |o| o.min(t.expires_at)),
                );
            }
            if t.used_at.is_some() {
                c.used += 1;
            } else if !expired {
                c.active += 1;
            }
        }
        Ok(by_type.into_values().collect())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl RunStore for MemoryStore {
    async fn insert_run(&self, run: &RunRecord) -> Result<()> {
        self.state().runs.insert(run.id, run.clone());
        Ok(())
    }

    async fn update_run(&self, run: &RunRecord) -> Result<()> {
        self.state().runs.insert(run.id, run.clone());
        Ok(())
    }

    async fn run(&self, id: Uuid) -> Result<Option<RunRecord>> {
        Ok(self.state().runs.get(&id).cloned())
    }

    async fn runs(&self, query: &RunQuery) -> Result<Vec<RunRecord>> {
        let state = self.state();
        // Uuid v7 ids sort by creation time.
        let runs = state.runs.values().rev().filter(|r| query.matches(r));
        Ok(match query.limit {
            Some(limit) => runs.take(limit as usize).cloned().collect(),
            None => runs.cloned().collect(),
        })
    }

    async fn try_acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let mut state = self.state();
        let now = Instant::now();
        match state.leases.get(name) {
            Some((owner, until)) if owner != holder && *until > now => Ok(false),
            _ => {
                state
                    .leases
                    .insert(name.to_owned(), (holder.to_owned(), now + ttl));
                Ok(true)
            }
        }
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        let mut state = self.state();
        if state
            .leases
            .get(name)
            .is_some_and(|(owner, _)| owner == holder)
        {
            state.leases.remove(name);
        }
        Ok(())
    }
}
