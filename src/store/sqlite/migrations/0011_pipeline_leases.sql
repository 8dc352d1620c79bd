-- Which process runs each pipeline. A pipeline runs in one worker process at a time: the one
-- holding its lease here, which renews it while it runs; another process takes the lease over
-- once it has expired, and a source page commits only under its pipeline's current holder.
CREATE TABLE pipeline_leases (
    pipeline_id TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL
);
