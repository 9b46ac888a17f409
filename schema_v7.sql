-- c2cvia store, schema step 7: the address each login came from.

-- addr is the client address a login came from, as the per-address limits
-- count it (an IPv4 address, an IPv6 address's /64); empty for logins made
-- before this step.
ALTER TABLE tokens ADD COLUMN addr TEXT NOT NULL DEFAULT '';

-- A net at --max-peers with no idle login gives a new login the slot of the
-- address that holds the most: each address's logins counted, and its idlest
-- one found, from this index alone.
CREATE INDEX tokens_addr ON tokens (net, addr, last_seen_at);
