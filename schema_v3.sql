-- c2cvia store, schema step 3: the idlest login of a net, and the bytes
-- each net stores.

-- A net at --max-peers gives the slot of its login idle the longest to a
-- new one: found by one index step, however many logins it has.
CREATE INDEX tokens_seen ON tokens (net, last_seen_at);

-- The bytes each net stores, for the storage
-- budget (--max-net-store). Triggers keep it exact in every transaction
-- that writes requests or messages, whoever writes (the relay, a purge), so
-- the budget is checked with one primary-key read and nothing is counted
-- at start-up. bytes counts payload: sim_req and sim_res of requests, data
-- of peer messages, in bytes of their JSON text.

CREATE TABLE net_usage (
  net   TEXT PRIMARY KEY,
  bytes INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO net_usage (net, bytes)
SELECT net, sum(b) FROM (
  SELECT net, length(CAST(sim_req AS BLOB)) + coalesce(length(CAST(sim_res AS BLOB)), 0) AS b FROM requests
  UNION ALL
  SELECT net, length(CAST(data AS BLOB)) FROM messages
) GROUP BY net;

CREATE TRIGGER requests_usage_insert AFTER INSERT ON requests BEGIN
  INSERT INTO net_usage (net, bytes) VALUES (NEW.net, length(CAST(NEW.sim_req AS BLOB)))
    ON CONFLICT (net) DO UPDATE SET bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER requests_usage_answer AFTER UPDATE OF sim_res ON requests BEGIN
  UPDATE net_usage SET bytes = bytes + coalesce(length(CAST(NEW.sim_res AS BLOB)), 0)
    - coalesce(length(CAST(OLD.sim_res AS BLOB)), 0) WHERE net = NEW.net;
END;

CREATE TRIGGER requests_usage_delete AFTER DELETE ON requests BEGIN
  UPDATE net_usage SET bytes = bytes - length(CAST(OLD.sim_req AS BLOB))
    - coalesce(length(CAST(OLD.sim_res AS BLOB)), 0) WHERE net = OLD.net;
END;

CREATE TRIGGER messages_usage_insert AFTER INSERT ON messages BEGIN
  INSERT INTO net_usage (net, bytes) VALUES (NEW.net, length(CAST(NEW.data AS BLOB)))
    ON CONFLICT (net) DO UPDATE SET bytes = bytes + excluded.bytes;
END;

CREATE TRIGGER messages_usage_delete AFTER DELETE ON messages BEGIN
  UPDATE net_usage SET bytes = bytes - length(CAST(OLD.data AS BLOB)) WHERE net = OLD.net;
END;
