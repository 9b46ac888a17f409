-- c2cvia store, schema step 6: answers in parts, and requests withdrawn by
-- their caller (docs/API.md, "Streamed answers and cancellation").

-- stream: NULL for an answer posted whole; 'open' from a pushres with more
-- until the last part, then 'complete'. An open stream whose lease
-- (lease_expires_at) ran out is aborted, and one whose request was
-- cancelled is cancelled: both are decided on read, like expired.
-- body_bytes: the bytes of a streamed answer's body committed so far, all
-- in answer_parts (sim_res then holds only the head).
-- cancelled_at: when the request's caller withdrew it. A request withdrawn
-- before it was answered is stored as failed, so that every index and the
-- janitor treat it as finished; its status reads cancelled.
-- kept_from: the parts before this offset were dropped once read by the
-- answer's one reader (a synchronous /via/ caller); body_bytes - kept_from
-- are the bytes its parts store.
ALTER TABLE requests ADD COLUMN stream TEXT CHECK (stream IN ('open', 'complete'));
ALTER TABLE requests ADD COLUMN body_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN kept_from INTEGER NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN cancelled_at INTEGER;

-- The body of a streamed answer, one row per part, in offset order.
-- req_seq is the request's seq; offset the body bytes before this part.
CREATE TABLE answer_parts (
  req_seq INTEGER NOT NULL,
  offset  INTEGER NOT NULL,
  data    BLOB NOT NULL,
  PRIMARY KEY (req_seq, offset)
) STRICT;

-- The storage budget counts the bytes a streamed answer's parts store,
-- body_bytes - kept_from.
CREATE TRIGGER requests_usage_parts AFTER UPDATE OF body_bytes, kept_from ON requests BEGIN
  UPDATE net_usage SET bytes = bytes + (NEW.body_bytes - NEW.kept_from) - (OLD.body_bytes - OLD.kept_from)
    WHERE net = NEW.net;
END;

DROP TRIGGER requests_usage_delete;
CREATE TRIGGER requests_usage_delete AFTER DELETE ON requests BEGIN
  UPDATE net_usage SET bytes = bytes - length(CAST(OLD.sim_req AS BLOB))
    - coalesce(length(CAST(OLD.sim_res AS BLOB)), 0) - (OLD.body_bytes - OLD.kept_from) WHERE net = OLD.net;
  DELETE FROM answer_parts WHERE req_seq = OLD.seq;
END;
