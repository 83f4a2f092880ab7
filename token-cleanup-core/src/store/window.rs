//! Key windows sized from the density of keys in the previous window: how PostgreSQL
//! passes (by expiry) and SQLite sweeps (by rowid) bound a batch without reading ahead.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard};

/// How many of its typical deviations a window's count may rise above the count it was
/// sized for before it holds more than a batch and is rolled back.
pub(crate) const WINDOW_MARGIN: f64 = 4.0;

/// The share of a batch a window aims at, however steady the density of keys.
pub(crate) const FILL_RANGE: (f64, f64) = (0.5, 0.97);

/// Most a window widens or narrows from one batch to the next.
pub(crate) const WINDOW_STEP: f64 = 4.0;

/// The widest window (in microseconds, about 290 years): "up to the end".
pub(crate) const MAX_WIDTH: i64 = i64::MAX / 1024;

/// The key window of a pass's next batch, from `start`, `width` keys wide, sized from the
/// density of keys in the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Window<K> {
    /// Where the window starts: where the previous window ended.
    pub(crate) start: K,
    /// Width in key units (microseconds, rowids), at least 1.
    pub(crate) width: i64,
    /// Typical relative deviation of a window's count from the count it was sized for
    /// (a moving average), which sets how much of a batch the next window aims at.
    pub(crate) spread: f64,
}

impl<K: Copy> Window<K> {
    /// The most a window's spread counts: enough to aim at the smallest fill.
    pub(crate) const MAX_SPREAD: f64 = (1.0 - FILL_RANGE.0) / WINDOW_MARGIN;

    /// A window from `start`, where `limit` rows spanned `span` keys (a probe, or a bound
    /// such as "a rowid per row"). Counts are assumed to vary at least as a Poisson count
    /// does (`1 / sqrt(limit)`), or as `spread` says they did so far in the pass.
    pub(crate) fn probed(start: K, span: i64, limit: u32, spread: Option<f64>) -> Self {
        let poisson = 1.0 / f64::from(limit.max(1)).sqrt();
        let mut window = Self {
            start,
            width: 1,
            spread: spread.unwrap_or(poisson).max(poisson).min(Self::MAX_SPREAD),
        };
        window.width = scaled(span, window.fill());
        window
    }

    /// The share of a batch this window aims at: smaller when counts vary more.
    pub(crate) fn fill(&self) -> f64 {
        (1.0 - WINDOW_MARGIN * self.spread).clamp(FILL_RANGE.0, FILL_RANGE.1)
    }

    /// How far `found` rows are from what this window aimed at, relatively.
    pub(crate) fn deviation(&self, found: u64, limit: u32) -> f64 {
        (found as f64 / (self.fill() * f64::from(limit)) - 1.0).abs()
    }

    /// The window from `end` that follows this one, which held `found` rows (an empty
    /// window counts as one row: the next is as much wider as a step allows).
    pub(crate) fn next(&self, end: K, found: u64, limit: u32) -> Self {
        let spread =
            (0.75 * self.spread + 0.25 * self.deviation(found, limit)).min(Self::MAX_SPREAD);
        let mut next = Self {
            start: end,
            width: self.width,
            spread,
        };
        let factor = next.fill() * f64::from(limit) / found.max(1) as f64;
        next.width = scaled(self.width, factor.clamp(1.0 / WINDOW_STEP, WINDOW_STEP));
        next
    }
}

/// The next window of each pass in progress, by a key the store chooses, so that a batch
/// continues where this store's previous batch of the same pass ended.
#[derive(Debug)]
pub(crate) struct Windows<K, S>(Mutex<HashMap<K, Window<S>>>);

impl<K, S> Default for Windows<K, S> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash, S: Copy> Windows<K, S> {
    /// Passes abandoned without a last batch (a run stopped) are forgotten past this many.
    const MAX_PASSES: usize = 1024;

    fn slot(&self) -> MutexGuard<'_, HashMap<K, Window<S>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next window of the pass `key`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn get(&self, key: &K) -> Option<Window<S>> {
        self.slot().get(key).copied()
    }

    /// The next window of the pass `key`, which is forgotten.
    #[cfg_attr(not(feature = "sqlite"), allow(dead_code))]
    pub(crate) fn take(&self, key: &K) -> Option<Window<S>> {
        self.slot().remove(key)
    }

    pub(crate) fn set(&self, key: K, window: Window<S>) {
        let mut windows = self.slot();
        if windows.len() >= Self::MAX_PASSES {
            windows.clear();
        }
        windows.insert(key, window);
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn clear(&self, key: &K) {
        self.slot().remove(key);
    }
}

/// `width` times `factor`, as a window width.
fn scaled(width: i64, factor: f64) -> i64 {
    ((width as f64 * factor) as i64).clamp(1, MAX_WIDTH)
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: i64 = 1_700_000_000_000_000;

    #[test]
    fn probed_window_aims_below_a_poisson_count() {
        // 1000 rows spanned 1000 keys: a window of about 87 % of that.
        assert_eq!(Window::probed(START, 1000, 1000, None).width, 873);
        assert_eq!(Window::probed(START, 5000, 5000, None).width, 4717);
        // Tiny batches aim at half of one.
        assert_eq!(Window::probed(START, 10, 3, None).width, 5);
        // What the pass has seen counts, within bounds.
        assert_eq!(Window::probed(START, 1000, 1000, Some(0.1)).width, 600);
        assert_eq!(Window::probed(START, 1000, 1000, Some(9.0)).width, 500);
        assert_eq!(Window::probed(START, 1000, 1000, Some(0.0)).width, 873);
    }

    #[test]
    fn steady_counts_fill_windows_up_to_the_cap() {
        let mut window = Window::probed(START, 1000, 1000, None);
        for _ in 0..50 {
            // Exactly the rows the window was sized for, one per key.
            let found = window.width as u64;
            window = window.next(window.start + window.width, found, 1000);
        }
        assert!((window.fill() - FILL_RANGE.1).abs() < 1e-9, "{window:?}");
        assert_eq!(window.width, 970);
    }

    #[test]
    fn windows_follow_density_a_step_at_a_time() {
        let window = Window::probed(START, 1000, 1000, None);
        let end = START + window.width;
        // Ten times denser than expected: a quarter as wide, and aiming lower.
        let next = window.next(end, 8730, 1000);
        assert_eq!(next.width, window.width / 4);
        assert_eq!(next.fill(), FILL_RANGE.0);
        // Ten times sparser: four times as wide.
        assert_eq!(window.next(end, 87, 1000).width, window.width * 4);
        // An empty window: as wide as a step allows.
        assert_eq!(window.next(end, 0, 1000).width, window.width * 4);
        // An outlier's weight fades within a few windows.
        let mut window = next;
        for _ in 0..6 {
            let found = (window.fill() * 1000.0) as u64;
            window = window.next(end, found, 1000);
        }
        assert!(window.fill() > 0.85, "{window:?}");
    }
}
