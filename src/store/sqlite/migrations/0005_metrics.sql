-- The metric ingest log. An acknowledged batch is a row here before it is aggregated in
-- memory; at start the aggregates are rebuilt from the last snapshot plus the rows after it.
-- A snapshot and the removal of the payloads it covers commit together. `batch_id`s are kept
-- (without payload) so a retried batch is recognised for a day.
CREATE TABLE metric_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id    TEXT UNIQUE,
    kind        TEXT NOT NULL,
    payload     TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX metric_log_received ON metric_log (received_at) WHERE batch_id IS NOT NULL;

CREATE TABLE metric_snapshot (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    through_seq INTEGER NOT NULL,
    data        BLOB NOT NULL,
    taken_at    INTEGER NOT NULL
);
