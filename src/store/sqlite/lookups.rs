//! Lookup tables: small key → value maps, each replaced whole by a job's `lookup` sink.

use rusqlite::{Connection, params};

use crate::clock::Millis;
use crate::store::{LookupTable, LookupTableInfo, Result};

/// Replaces the table's entries in the caller's transaction; later duplicates of a key win.
pub fn replace(
    conn: &Connection,
    name: &str,
    entries: &[(String, String)],
    now: Millis,
) -> Result<bool> {
    let existed = conn
        .prepare_cached("DELETE FROM lookup_tables WHERE name = ?1")?
        .execute([name])?
        > 0;
    let mut insert = conn.prepare_cached(
        "INSERT INTO lookup_tables (name, key, value, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
    )?;
    for (key, value) in entries {
        insert.execute(params![name, key, value, now])?;
    }
    Ok(existed)
}

pub fn get(conn: &Connection, name: &str) -> Result<Option<LookupTable>> {
    let mut statement =
        conn.prepare_cached("SELECT key, value, updated_at FROM lookup_tables WHERE name = ?1")?;
    let mut rows = statement.query([name])?;
    let mut table: Option<LookupTable> = None;
    while let Some(row) = rows.next()? {
        let updated_at: Millis = row.get(2)?;
        let table = table.get_or_insert_with(|| LookupTable {
            name: name.to_owned(),
            entries: Default::default(),
            updated_at,
        });
        table.entries.insert(row.get(0)?, row.get(1)?);
    }
    Ok(table)
}

pub fn list(conn: &Connection) -> Result<Vec<LookupTableInfo>> {
    Ok(conn
        .prepare_cached(
            "SELECT name, COUNT(*), MAX(updated_at) FROM lookup_tables GROUP BY name ORDER BY name",
        )?
        .query_map([], |row| {
            Ok(LookupTableInfo {
                name: row.get(0)?,
                entries: row.get(1)?,
                updated_at: row.get(2)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::schema;

    fn pairs(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        let owned = entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        owned.collect()
    }

    #[test]
    fn tables_are_replaced_whole_and_listed() {
        let mut conn = Connection::open_in_memory().expect("open");
        schema::migrate(&mut conn).expect("migrate");
        assert_eq!(get(&conn, "currency").expect("get"), None);

        let first = pairs(&[("eur", "0.9"), ("gbp", "0.8"), ("eur", "0.92")]);
        assert!(
            !replace(&conn, "currency", &first, 10).expect("replace"),
            "new"
        );
        replace(&conn, "country", &pairs(&[("uk", "gb")]), 11).expect("replace");
        let table = get(&conn, "currency").expect("get").expect("exists");
        assert_eq!(table.updated_at, 10);
        assert_eq!(table.entries.len(), 2);
        assert_eq!(table.entries["eur"], "0.92");

        assert!(replace(&conn, "currency", &pairs(&[("usd", "1")]), 20).expect("replace"));
        let table = get(&conn, "currency").expect("get").expect("exists");
        assert_eq!(table.entries.len(), 1, "the old entries are gone");
        assert_eq!(table.entries["usd"], "1");

        let names: Vec<(String, u64, Millis)> = list(&conn)
            .expect("list")
            .into_iter()
            .map(|info| (info.name, info.entries, info.updated_at))
            .collect();
        assert_eq!(
            names,
            vec![("country".into(), 1, 11), ("currency".into(), 1, 20)]
        );

        assert!(replace(&conn, "country", &[], 30).expect("empty replace"));
        assert_eq!(get(&conn, "country").expect("get"), None);
        assert!(!replace(&conn, "country", &[], 31).expect("gone already"));
    }
}
