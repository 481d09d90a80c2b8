-- segmart control-plane catalog, schema version 5: OAuth clients of buyers.
--
-- Buyer clients are separate from provider clients: their permissions are the buyer ones
-- (bits: 1 buyer_segments_read, 2 buyer_campaigns, 4 buyer_activate, 8 buyer_usage_read) and
-- their tokens reach only the buyer APIs of their own buyer. Only the argon2id hash of the
-- secret is stored.
CREATE TABLE buyer_clients (
    id          TEXT    NOT NULL PRIMARY KEY,
    buyer_id    INTEGER NOT NULL REFERENCES buyers (id),
    name        TEXT    NOT NULL,
    permissions INTEGER NOT NULL CHECK (permissions BETWEEN 1 AND 15),
    secret_hash TEXT    NOT NULL,
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX buyer_clients_by_buyer ON buyer_clients (buyer_id);
