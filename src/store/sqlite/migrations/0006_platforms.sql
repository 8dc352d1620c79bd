-- Platforms (named connector + processors + sink templates), each step's progress entries,
-- and the records of a step as collected, before its processors (size-capped).
CREATE TABLE platforms (
    name       TEXT PRIMARY KEY,
    origin     TEXT NOT NULL,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

ALTER TABLE steps ADD COLUMN progress TEXT;

CREATE TABLE original_records (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    step_id INTEGER NOT NULL,
    page    INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    data    TEXT NOT NULL,
    UNIQUE (step_id, page, seq)
);
CREATE INDEX original_records_job ON original_records (job_id, id);
