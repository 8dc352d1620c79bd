-- Lookup tables: key -> value maps that `lookup` sinks replace whole and `map` processors read.
CREATE TABLE IF NOT EXISTS lookup_tables (
    name       TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (name, key)
) WITHOUT ROWID;
