-- A metric snapshot is stored in parts of about 1 MiB, each a JSON array of series, written in
-- one transaction: neither taking nor loading a snapshot holds several copies of its whole
-- text in memory (a single 25 MB blob was copied twice more by SQLite on the way in).
CREATE TABLE metric_snapshot_part (
    part INTEGER PRIMARY KEY,
    data BLOB NOT NULL
);
INSERT INTO metric_snapshot_part (part, data) SELECT 0, data FROM metric_snapshot WHERE id = 1;
ALTER TABLE metric_snapshot DROP COLUMN data;
