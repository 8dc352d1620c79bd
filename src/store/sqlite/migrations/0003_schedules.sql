-- Schedules and the ticks they fired. `(schedule_id, tick)` is the primary key of a fired
-- tick, so two schedulers (or one after a restart) can never create a second job for it.
CREATE TABLE schedules (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    origin      TEXT NOT NULL,
    spec        TEXT NOT NULL,
    next_at     INTEGER,
    last_tick   INTEGER,
    last_job_id TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_at) WHERE next_at IS NOT NULL;

CREATE TABLE schedule_ticks (
    schedule_id TEXT NOT NULL,
    tick        INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    job_id      TEXT,
    fired_at    INTEGER NOT NULL,
    PRIMARY KEY (schedule_id, tick)
) WITHOUT ROWID;
