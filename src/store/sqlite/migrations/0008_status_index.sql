-- Job statuses are counted and probed, never paged through (listing pages by id), so their
-- index needs no id: `(status)` entries are ordered by rowid, which spares each status change
-- comparisons of 36-character ids (that share their time prefix) at every level of the index.
DROP INDEX jobs_status;
CREATE INDEX jobs_status ON jobs (status);
