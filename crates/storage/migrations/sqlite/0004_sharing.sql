-- segmart control-plane catalog, schema version 4: sharing segments with buyers, campaigns and
-- the mail outbox.

-- A buyer user's e-mail address, where share notifications go.
ALTER TABLE users ADD COLUMN email TEXT;

-- A share: segments of one provider (listed, or a whole folder: every segment it has now or
-- later), free or at a fixed CPM, public (anyone holding the key) or private (named buyers).
-- Only the SHA-256 of the 256-bit key is stored; `key_label` is a non-secret name for it.
-- A revoked share keeps its row (`revoked_at`) for the owner's history.
CREATE TABLE shares (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    member_id  INTEGER NOT NULL REFERENCES members (member_id),
    folder_id  TEXT    REFERENCES folders (id),
    cpm        REAL    NOT NULL CHECK (cpm >= 0),
    currency   TEXT    NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    public     INTEGER NOT NULL CHECK (public IN (0, 1)),
    key_hash   TEXT    NOT NULL UNIQUE,
    key_label  TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE INDEX shares_by_member ON shares (member_id, id);

CREATE TABLE share_segments (
    share_id    INTEGER NOT NULL REFERENCES shares (id),
    segment_num INTEGER NOT NULL REFERENCES segments (num),
    PRIMARY KEY (share_id, segment_num)
) STRICT;

-- Private recipients, by buyer.
CREATE TABLE share_recipients (
    share_id INTEGER NOT NULL REFERENCES shares (id),
    buyer_id INTEGER NOT NULL REFERENCES buyers (id),
    PRIMARY KEY (share_id, buyer_id)
) STRICT;

CREATE TABLE activations (
    share_id     INTEGER NOT NULL REFERENCES shares (id),
    buyer_id     INTEGER NOT NULL REFERENCES buyers (id),
    activated_at INTEGER NOT NULL,
    PRIMARY KEY (share_id, buyer_id)
) STRICT;

-- A buyer's campaigns and their audience rule: include segments (any or all of them) and
-- exclude segments.
CREATE TABLE campaigns (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    buyer_id       INTEGER NOT NULL REFERENCES buyers (id),
    name           TEXT    NOT NULL,
    match_all      INTEGER NOT NULL CHECK (match_all IN (0, 1)),
    status         TEXT    NOT NULL CHECK (status IN ('active', 'stopped')),
    stopped_reason TEXT,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
) STRICT;

CREATE INDEX campaigns_by_buyer ON campaigns (buyer_id, id);

CREATE TABLE campaign_segments (
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    segment_num INTEGER NOT NULL REFERENCES segments (num),
    exclude     INTEGER NOT NULL CHECK (exclude IN (0, 1)),
    PRIMARY KEY (campaign_id, segment_num)
) STRICT;

CREATE INDEX campaign_segments_by_segment ON campaign_segments (segment_num);

-- Mail to send. Written in the transaction that caused it, so a notification is never lost;
-- the mailer delivers it (SMTP when configured) and records each attempt.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    to_addr         TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    sent_at         INTEGER
) STRICT;

CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE sent_at IS NULL;
