//! Embedded migrations, applied in order at start and tracked in `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry is applied once, in its own transaction, when `user_version` is below its number.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_delivery.sql"),
    include_str!("migrations/0003_schedules.sql"),
    include_str!("migrations/0004_pipelines.sql"),
    include_str!("migrations/0005_metrics.sql"),
    include_str!("migrations/0006_platforms.sql"),
    include_str!("migrations/0007_lookups.sql"),
    include_str!("migrations/0008_status_index.sql"),
    include_str!("migrations/0009_metric_snapshot_parts.sql"),
    include_str!("migrations/0010_status_id_index.sql"),
    include_str!("migrations/0011_pipeline_leases.sql"),
];

/// Prepared statements each connection keeps. The store runs well over a hundred distinct
/// statements; with rusqlite's default of 16 the hot ones (claim, finish, the attempt log)
/// evicted each other and were parsed again on most uses.
pub const STATEMENT_CACHE: usize = 256;

/// Connection settings of the write connection: WAL, full fsync, a busy timeout.
pub fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // 8 MB. SQLite walks the whole page-cache hash table at the end of every write
    // transaction (`pcache1TruncateUnsafe`); at 32 MB that walk was a tenth of a small
    // transaction's time, and the engine's transactions are many and small.
    conn.pragma_update(None, "cache_size", -8_000)?;
    Ok(())
}

/// Applies pending migrations; returns how many ran.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let mut applied = 0;
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index + 1)?;
        tx.commit()?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once() {
        let mut conn = Connection::open_in_memory().expect("open");
        assert_eq!(migrate(&mut conn).expect("first"), MIGRATIONS.len());
        assert_eq!(migrate(&mut conn).expect("second"), 0);
    }

    #[test]
    fn a_one_blob_metric_snapshot_becomes_the_first_part() {
        let mut conn = Connection::open_in_memory().expect("open");
        for sql in &MIGRATIONS[..8] {
            conn.execute_batch(sql).expect("migration");
        }
        conn.pragma_update(None, "user_version", 8)
            .expect("version");
        conn.execute(
            "INSERT INTO metric_snapshot (id, through_seq, data, taken_at) VALUES (1, 42, ?1, 7)",
            [b"[[{\"name\":\"a\"},{}]]".to_vec()],
        )
        .expect("old snapshot");
        assert_eq!(migrate(&mut conn).expect("0009"), MIGRATIONS.len() - 8);
        let (through, parts) = super::super::metrics::snapshot(&conn)
            .expect("read")
            .expect("a snapshot");
        assert_eq!(through, 42);
        assert_eq!(parts, vec![b"[[{\"name\":\"a\"},{}]]".to_vec()]);
    }
}
