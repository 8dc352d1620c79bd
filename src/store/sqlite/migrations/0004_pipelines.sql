-- Pipelines, the durable queues between their stages, per-stage counters and dead letters.
-- A message row sits at the stage that will handle it next; a stage's success moves it on
-- (deleting it and inserting its outputs at the next stages) in one transaction, so a crash
-- at any point leaves each message at exactly one stage. A source page's messages and the
-- source's new checkpoint are committed together, so a restart neither loses nor refetches.
CREATE TABLE pipelines (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    origin     TEXT NOT NULL,
    spec       TEXT NOT NULL,
    state      TEXT NOT NULL,
    checkpoint TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE pipeline_messages (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id TEXT NOT NULL,
    stage       INTEGER NOT NULL,
    payload     TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,
    last_error  TEXT
);
CREATE INDEX pipeline_messages_stage ON pipeline_messages (pipeline_id, stage, id);

-- `entered = done + dead + (messages still at the stage)` holds for every stage; the source
-- (stage 0) counts records fetched as entered and done, and pages in `pages`.
CREATE TABLE pipeline_counters (
    pipeline_id TEXT NOT NULL,
    stage       INTEGER NOT NULL,
    entered     INTEGER NOT NULL DEFAULT 0,
    done        INTEGER NOT NULL DEFAULT 0,
    produced    INTEGER NOT NULL DEFAULT 0,
    retried     INTEGER NOT NULL DEFAULT 0,
    dead        INTEGER NOT NULL DEFAULT 0,
    pages       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (pipeline_id, stage)
) WITHOUT ROWID;

CREATE TABLE pipeline_dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    pipeline_id TEXT NOT NULL,
    stage       INTEGER NOT NULL,
    stage_name  TEXT NOT NULL,
    payload     TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT NOT NULL,
    http_status INTEGER,
    response    TEXT,
    failed_at   INTEGER NOT NULL,
    replayed_at INTEGER
);
CREATE INDEX pipeline_dead_letters_pipeline ON pipeline_dead_letters (pipeline_id, id);
