-- c2cvia store, schema step 5: the store names itself, and records the
-- lifetimes of the relay that serves it.

-- "c2cv": tells a c2cvia store from another program's SQLite file, which
-- serve refuses rather than convert.
PRAGMA application_id = 1664246646;

-- The lifetimes the serving relay runs with (written at each start:
-- req_ttl_ms, res_ttl_ms, token_ttl_ms, msg_ttl_ms, max_attempts), so that
-- `c2cvia purge` and `c2cvia inspect` apply the relay's own, whatever
-- their environment.
CREATE TABLE settings (
  name  TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
