//! WAL checkpoints on their own thread and connection, off the writer's path.
//!
//! SQLite's automatic checkpoint runs inside the commit that crossed the threshold: that commit
//! (and every operation of its group, and every group queued behind it) waits while a thousand
//! pages are copied into the database file and it is fsynced. Here the writer's commit hook
//! asks this thread, which copies with a PASSIVE checkpoint that never blocks the writer.
//!
//! The log restarts from its start (overwriting a file in place also syncs faster than growing
//! it) only when a write transaction begins with every frame copied, and a writer that keeps
//! committing stays ahead of any background copy. So once this thread has copied what it found,
//! the hook copies the remainder (what was committed meanwhile) itself, in the writer thread: a
//! short pause instead of the thousand-page one, and the log restarts at the next transaction.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;

use rusqlite::Connection;
use rusqlite::hooks::Wal;
use rusqlite::wal::CheckpointMode;

use super::super::{Error, Result};

/// WAL pages after which a checkpoint is asked for (SQLite's own default threshold).
const THRESHOLD_PAGES: u32 = 1000;
/// Log length at which the writer stops waiting for the background thread.
const FALLBACK_PAGES: u32 = 4 * THRESHOLD_PAGES;

/// The writer connection's side of the checkpoint thread; dropping it (with the connection's
/// hook) ends the thread.
pub struct Checkpointer {
    ask: mpsc::SyncSender<()>,
    /// The last background checkpoint: frames in the log then (high half) and frames copied;
    /// zero once the writer acted on it.
    last: Arc<AtomicU64>,
    /// A background checkpoint was asked for and has not reported yet. The writer asks only
    /// then, so that its own copy of the remainder does not keep meeting the next background
    /// pass (both need the checkpoint lock).
    running: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Takes over `conn`'s checkpoints (its commit hook replaces SQLite's automatic
    /// checkpoint): starts the thread, with its own connection to the database at `path`.
    pub fn attach(conn: &mut Connection, path: &Path) -> Result<()> {
        let checkpointer = Self::start(path)?;
        conn.wal_hook(Some(move |wal: &mut Wal, pages| {
            checkpointer.committed(wal, pages);
            Ok(())
        }))?;
        Ok(())
    }

    fn start(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        // The checkpoint fsyncs the database file before the log may be overwritten.
        conn.pragma_update(None, "synchronous", "FULL")?;
        // One pending request is enough: a checkpoint copies everything committed so far.
        let (ask, asked) = mpsc::sync_channel(1);
        let last = Arc::new(AtomicU64::new(0));
        let running = Arc::new(AtomicBool::new(false));
        let (reported, done) = (last.clone(), running.clone());
        std::thread::Builder::new()
            .name("gleaner-sqlite-checkpoint".into())
            .spawn(move || run(&conn, &asked, &reported, &done))
            .map_err(|error| Error::Database(error.to_string()))?;
        Ok(Self { ask, last, running })
    }

    /// The writer's commit hook, with the log now `pages` frames long. Past
    /// [`THRESHOLD_PAGES`] it copies the remainder itself once a background checkpoint has
    /// copied what it found, and otherwise asks for one (never blocking). Past
    /// [`FALLBACK_PAGES`] (the background thread cannot keep up) it copies everything itself,
    /// as SQLite's own checkpoint would.
    fn committed(&self, wal: &mut Wal, pages: i32) {
        let pages = u32::try_from(pages).unwrap_or(0);
        if pages < THRESHOLD_PAGES {
            return;
        }
        let last = self.last.load(Ordering::Acquire);
        let (log, copied) = ((last >> 32) as u32, last as u32);
        // `log <= pages`: a report about this generation of the log, not one from before the
        // last restart (a stale report costs a longer copy here, never a lost frame).
        let caught_up = log > 0 && copied == log && log <= pages;
        if caught_up || pages >= FALLBACK_PAGES {
            match wal.checkpoint_v2(CheckpointMode::PASSIVE) {
                Ok(_) => {
                    // The log restarts at the next transaction; the report is about the old one.
                    self.last.store(0, Ordering::Release);
                    return;
                }
                // Busy: the background thread is still copying.
                Err(error) => tracing::trace!(%error, "writer's wal checkpoint skipped"),
            }
        }
        if !self.running.swap(true, Ordering::AcqRel) && self.ask.try_send(()).is_err() {
            self.running.store(false, Ordering::Release);
        }
    }
}

fn run(conn: &Connection, asked: &mpsc::Receiver<()>, last: &AtomicU64, running: &AtomicBool) {
    while asked.recv().is_ok() {
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
        });
        match result {
            Ok((log, copied)) => {
                let clamp =
                    |frames: i64| u64::try_from(frames).unwrap_or(0).min(u64::from(u32::MAX));
                last.store(clamp(log) << 32 | clamp(copied), Ordering::Release);
                tracing::trace!(log, copied, "wal checkpoint");
            }
            Err(error) => {
                tracing::warn!(%error, "wal checkpoint failed; the next commit asks again")
            }
        }
        running.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without checkpoints the log would hold every page written (about 88 MB here); with
    /// them it is restarted from its start and stays near the threshold.
    #[test]
    fn the_log_is_checkpointed_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wal.db");
        let mut conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch("CREATE TABLE blobs (data BLOB NOT NULL)")
            .expect("table");
        Checkpointer::attach(&mut conn, &path).expect("checkpointer");
        let blob = vec![7u8; 64 * 1024];
        for _ in 0..640 {
            conn.execute("INSERT INTO blobs (data) VALUES (?1)", [&blob])
                .expect("insert");
            conn.execute("DELETE FROM blobs", []).expect("delete");
        }
        let wal = std::fs::metadata(dir.path().join("wal.db-wal"))
            .expect("wal file")
            .len();
        assert!(
            wal < 12 * 1024 * 1024,
            "the log grew to {wal} bytes: it was never checkpointed and restarted"
        );
    }
}
