-- c2cvia store, schema step 4: the address a request came from.
-- remote_addr is "IP:port" as the relay saw the sender (the client address
-- behind a trusted proxy, with port 0); a handler behind an SDK gets it as
-- its request's remote address. Empty for requests stored before this step.
ALTER TABLE requests ADD COLUMN remote_addr TEXT NOT NULL DEFAULT '';
