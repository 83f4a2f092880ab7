//! Helpers shared by the scheduler and notifier tests.
#![allow(dead_code)]

pub(crate) mod smtp_sink;

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use token_cleanup_core::{Clock, Notification, Notifier};

/// Log lines written on this thread while the returned guard lives (which is every
/// task of a current-thread tokio test).
///
/// One global subscriber is installed once per test binary and hands each line to the
/// capture of the thread that wrote it. A scoped (`set_default`) subscriber would not do:
/// tracing caches each callsite's interest for the whole process, and a test running
/// without a subscriber at the same moment could register a callsite as disabled.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURE: RefCell<Option<Logs>> = const { RefCell::new(None) };
}

/// Ends a capture (restoring the one it replaced, if any) when dropped.
pub(crate) struct CaptureGuard {
    previous: Option<Logs>,
}

impl Drop for CaptureGuard {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CAPTURE.with(|c| *c.borrow_mut() = previous);
    }
}

/// Writes to the capture of the current thread, if there is one.
struct ThreadCapture;

impl Write for ThreadCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(logs) = &*c.borrow() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub(crate) fn capture() -> (Self, CaptureGuard) {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadCapture)
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test binary");
        });
        let logs = Logs::default();
        let previous = CAPTURE.with(|c| c.borrow_mut().replace(logs.clone()));
        (logs, CaptureGuard { previous })
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Lines at WARN containing `needle`.
    pub(crate) fn warnings_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(" WARN ") && l.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

/// Notifications with the instant each arrived.
pub(crate) type Seen = Arc<Mutex<Vec<(DateTime<Utc>, Notification)>>>;

/// Keeps every notification with the instant (by `clock`) it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    clock: Arc<dyn Clock>,
    pub(crate) seen: Seen,
}

impl Recorder {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            seen: Arc::default(),
        }
    }

    pub(crate) fn kinds(&self) -> Vec<&'static str> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n)| n.kind())
            .collect()
    }
}

#[async_trait]
impl Notifier for Recorder {
    fn name(&self) -> &str {
        "recorder"
    }
    async fn notify(&self, n: &Notification) -> token_cleanup_core::Result<()> {
        self.seen
            .lock()
            .unwrap()
            .push((self.clock.now(), n.clone()));
        Ok(())
    }
}

/// 2026-03-01 is a Sunday.
pub(crate) fn march(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, minute, 0).unwrap()
}

pub(crate) fn feb(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 2, day, hour, minute, 0).unwrap()
}
