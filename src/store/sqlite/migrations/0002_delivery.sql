-- Attempts that waited on an open circuit breaker: they are logged, but neither the attempt
-- limit nor the backoff exponent counts them.
ALTER TABLE steps ADD COLUMN deferrals INTEGER NOT NULL DEFAULT 0;
-- The attempt number a step had when it was last (re)queued by a retry, replay or redelivery:
-- retry schedules count from there.
ALTER TABLE steps ADD COLUMN round_start INTEGER NOT NULL DEFAULT 0;

-- The first KiB of the answer to every attempt that got one (callback receivers, upstreams).
ALTER TABLE attempts ADD COLUMN response TEXT;

-- Callback endpoints disabled by a `410 Gone`; deliveries to them stop until re-enabled.
CREATE TABLE disabled_endpoints (
    url         TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    job_id      TEXT,
    disabled_at INTEGER NOT NULL
);
