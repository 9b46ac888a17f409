-- c2cvia store, schema step 2: peer messaging (/api/v1/peer/).
-- A message is stored once, however many peers receive it: who may read it is
-- a rule over its kind, not a copy per receiver. Message ids are the readers'
-- cursors; AUTOINCREMENT keeps them growing even after the newest messages
-- expire and are deleted, so a cursor never points past a reused id.

-- last_seen_at: the token's last successful call, written at most once a
-- second (GET /api/v1/peer/peers).
-- msg_floor: the highest message id at login; a broadcast reaches a peer only
-- if it came after (a peer that logs in later does not get older broadcasts).
ALTER TABLE tokens ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tokens ADD COLUMN msg_floor INTEGER NOT NULL DEFAULT 0;
-- The valid logins of a net: broadcast receivers and the peers list.
CREATE INDEX tokens_net ON tokens (net, expires_at);

CREATE TABLE messages (
  id         INTEGER PRIMARY KEY AUTOINCREMENT,
  net        TEXT NOT NULL,
  kind       TEXT NOT NULL CHECK (kind IN ('unicast', 'multicast', 'broadcast')),
  from_peer  TEXT NOT NULL,
  to_peer    TEXT,                  -- unicast only
  topic      TEXT,                  -- multicast only
  data       TEXT NOT NULL,         -- JSON text as sent, insignificant spaces removed
  sent_at    INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,      -- --msg-ttl after sent_at
  receivers  INTEGER NOT NULL       -- as counted when it was sent
) STRICT;

-- A peer's page is three ranges in id order, merged: its unicasts, its net's
-- broadcasts and its net's multicasts (checked against its subscriptions).
CREATE INDEX messages_unicast ON messages (to_peer, id) WHERE kind = 'unicast';
CREATE INDEX messages_broadcast ON messages (net, id) WHERE kind = 'broadcast';
CREATE INDEX messages_multicast ON messages (net, id) WHERE kind = 'multicast';
-- janitor: messages past their retention.
CREATE INDEX messages_expiry ON messages (expires_at);

-- Subscription intervals in message-id space: a multicast m on topic reaches
-- peer_id iff from_id < m.id and (until_id IS NULL or m.id <= until_id).
-- Subscribe opens an interval at the current highest id, unsubscribe closes it.
CREATE TABLE subscriptions (
  net      TEXT NOT NULL,
  topic    TEXT NOT NULL,
  peer_id  TEXT NOT NULL,
  from_id  INTEGER NOT NULL,
  until_id INTEGER,                 -- NULL: still subscribed
  PRIMARY KEY (net, topic, peer_id, from_id)
) STRICT, WITHOUT ROWID;
-- janitor: the subscriptions of expired logins.
CREATE INDEX subscriptions_peer ON subscriptions (peer_id);
