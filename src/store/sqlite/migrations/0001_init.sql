-- Jobs and their steps. A job's status is derived from its steps on every step change.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    spec        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE steps (
    id               INTEGER PRIMARY KEY,
    job_id           TEXT NOT NULL,
    position         INTEGER NOT NULL,
    kind             TEXT NOT NULL,
    name             TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    budget_ms        INTEGER NOT NULL,
    run_at           INTEGER,
    deadline_at      INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    started_at       INTEGER,
    checkpoint       TEXT,
    pages            INTEGER NOT NULL DEFAULT 0,
    records          INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    last_status      INTEGER,
    config           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER
);
CREATE INDEX steps_job ON steps (job_id);
CREATE INDEX steps_due ON steps (run_at) WHERE state IN ('queued', 'retrying');
CREATE INDEX steps_leased ON steps (lease_expires_at) WHERE state = 'running';

-- One row per attempt, written when the attempt ends.
CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL,
    step_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error_kind  TEXT,
    http_status INTEGER,
    error       TEXT
);
CREATE INDEX attempts_job ON attempts (job_id);

-- Collected records; (step_id, page, seq) is unique so a page is never stored twice.
CREATE TABLE records (
    id      INTEGER PRIMARY KEY,
    job_id  TEXT NOT NULL,
    step_id INTEGER NOT NULL,
    page    INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    data    TEXT NOT NULL
);
CREATE INDEX records_job ON records (job_id, id);
CREATE UNIQUE INDEX records_page ON records (step_id, page, seq);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL,
    step_id     INTEGER NOT NULL,
    step_name   TEXT NOT NULL,
    state       TEXT NOT NULL,
    attempts    INTEGER NOT NULL,
    error       TEXT NOT NULL,
    error_kind  TEXT,
    http_status INTEGER,
    response    TEXT,
    created_at  INTEGER NOT NULL,
    replayed_at INTEGER
);
CREATE INDEX dead_letters_job ON dead_letters (job_id);
CREATE INDEX dead_letters_open ON dead_letters (created_at) WHERE replayed_at IS NULL;

CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    job_id       TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
