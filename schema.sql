-- c2cvia store, schema version 1.
-- Times are Unix milliseconds (UTC). Secrets (tokens, keys) are stored only as
-- SHA-256 hashes. Later changes are numbered steps in db.go's migrations,
-- recorded in PRAGMA user_version; this file never changes once shipped.

-- A net is claimed by the first SimServer key that uses it.
CREATE TABLE nets (
  name         TEXT PRIMARY KEY,
  key_hash     BLOB NOT NULL,
  claimed_at   INTEGER NOT NULL,
  last_poll_at INTEGER              -- last pullreqsmart, to the second
) STRICT, WITHOUT ROWID;

-- One row per login. peer_id is public, the token is not.
CREATE TABLE tokens (
  token_hash BLOB PRIMARY KEY,
  peer_id    TEXT NOT NULL UNIQUE,
  net        TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX tokens_expiry ON tokens (expires_at);

-- One row per sim_req/sim_res pair. seq is the arrival order.
CREATE TABLE requests (
  seq              INTEGER PRIMARY KEY,
  rid              TEXT NOT NULL UNIQUE,
  net              TEXT NOT NULL,
  token_hash       BLOB NOT NULL,       -- the owner: only it reads the response
  from_peer        TEXT NOT NULL,
  status           TEXT NOT NULL CHECK (status IN ('queued', 'delivered', 'answered', 'expired', 'failed')),
  attempt          INTEGER NOT NULL DEFAULT 0,
  sim_req          TEXT NOT NULL,
  sim_res          TEXT,
  created_at       INTEGER NOT NULL,
  expires_at       INTEGER NOT NULL,    -- unanswered after this: expired
  lease_expires_at INTEGER,             -- while delivered
  done_at          INTEGER,             -- answered, expired or failed at; retention counts from here
  pulled           INTEGER NOT NULL DEFAULT 0
) STRICT;

-- pullreqsmart: the oldest queued requests of a net, O(log n).
CREATE INDEX requests_queue ON requests (net, seq) WHERE status = 'queued';
-- pullreqsmart: leases that ran out; also the next lease deadline of a net.
CREATE INDEX requests_leases ON requests (net, lease_expires_at) WHERE status = 'delivered';
-- janitor: unanswered requests reaching their TTL.
CREATE INDEX requests_pending_expiry ON requests (expires_at) WHERE status IN ('queued', 'delivered');
-- pullsmart without rid: the oldest answered response a token has not pulled.
CREATE INDEX requests_unpulled ON requests (token_hash, done_at, seq) WHERE status = 'answered' AND pulled = 0;
-- janitor: finished requests whose retention ran out.
CREATE INDEX requests_done ON requests (done_at) WHERE status IN ('answered', 'expired', 'failed');
