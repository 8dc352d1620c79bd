-- Listing jobs by status pages by id within the status: `(status, id)` serves that as an index
-- range read newest first, where `(status)` made a rare status scan every job (about 100 ms at
-- 500 000 jobs, growing with the table). It costs each status change a comparison of ids.
DROP INDEX jobs_status;
CREATE INDEX jobs_status ON jobs (status, id);
