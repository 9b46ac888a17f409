-- c2cvia store, schema step 8: the address each peer message came from.

-- addr is the client address that sent the message, as the per-address
-- limits count it (an IPv4 address, an IPv6 address's /64): its data counts
-- against that address's --max-addr-store with the requests it sent. Empty
-- for messages sent before this step, which count against no address.
ALTER TABLE messages ADD COLUMN addr TEXT NOT NULL DEFAULT '';
