-- segmart control-plane catalog, schema version 3: pricing taxonomy and metered billing.
--
-- Integer ids here follow the billing API family of seed 002 (member, data provider, data
-- publisher, data category, mapping record). Prices are decimals (REAL); money in the ledger
-- is integer micros and lives outside the catalog.

-- A provider's account number in the billing API (`member_id`, also its `data_provider_id`)
-- and the platform's share of its data revenue, a percent of the data cost. Every provider has
-- exactly one, created with it by the trigger below. Numbers start at 1000.
CREATE TABLE members (
    member_id         INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id       TEXT    NOT NULL UNIQUE REFERENCES providers (id),
    data_revshare_pct REAL    NOT NULL DEFAULT 0 CHECK (data_revshare_pct BETWEEN 0 AND 100),
    active            INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1))
) STRICT;

INSERT INTO sqlite_sequence (name, seq) VALUES ('members', 999);
INSERT INTO members (provider_id) SELECT id FROM providers ORDER BY created_at, id;

CREATE TRIGGER providers_get_a_member AFTER INSERT ON providers
BEGIN
    INSERT INTO members (provider_id) VALUES (NEW.id);
END;

-- The pricing taxonomy, created by the operator: data publishers of a provider, and priced
-- data categories under them (FIX: a CPM in `currency`; RATE: a percent of the media cost).
CREATE TABLE data_publishers (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    member_id   INTEGER NOT NULL REFERENCES members (member_id),
    node_name   TEXT    NOT NULL,
    level_index INTEGER NOT NULL DEFAULT 0,
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE data_categories (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    publisher_id INTEGER NOT NULL REFERENCES data_publishers (id),
    member_id    INTEGER NOT NULL REFERENCES members (member_id),
    node_name    TEXT    NOT NULL,
    level_index  INTEGER NOT NULL DEFAULT 0,
    active       INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    cost_type    TEXT    NOT NULL CHECK (cost_type IN ('RATE', 'FIX')),
    cost_value   REAL    NOT NULL CHECK (cost_value >= 0 AND (cost_type = 'FIX' OR cost_value <= 100)),
    currency     TEXT    NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    created_at   INTEGER NOT NULL
) STRICT;

INSERT INTO sqlite_sequence (name, seq) VALUES ('data_categories', 1000);

-- Mapping records: a segment (by its platform number) priced by one of its provider's
-- categories. One record per segment.
CREATE TABLE segment_billing_categories (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_num          INTEGER NOT NULL UNIQUE REFERENCES segments (num),
    member_id            INTEGER NOT NULL REFERENCES members (member_id),
    data_category_id     INTEGER NOT NULL REFERENCES data_categories (id),
    active               INTEGER NOT NULL CHECK (active IN (0, 1)),
    is_public            INTEGER NOT NULL CHECK (is_public IN (0, 1)),
    data_segment_type_id TEXT    NOT NULL,
    recommend_include    INTEGER NOT NULL CHECK (recommend_include IN (0, 1)),
    created_at           INTEGER NOT NULL,
    updated_at           INTEGER NOT NULL
) STRICT;

CREATE INDEX segment_billing_categories_by_member ON segment_billing_categories (member_id, id);

-- Every change of what a segment costs, from the moment it took effect: an impression is priced
-- with the rule in force at its own time. Written in the transaction that made the change.
-- `data_category_id` NULL: no active mapping from `valid_from` on.
CREATE TABLE billing_rule_history (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    segment_num      INTEGER NOT NULL REFERENCES segments (num),
    valid_from       INTEGER NOT NULL,
    member_id        INTEGER NOT NULL REFERENCES members (member_id),
    data_category_id INTEGER,
    cost_type        TEXT CHECK (cost_type IS NULL OR cost_type IN ('RATE', 'FIX')),
    cost_value       REAL,
    currency         TEXT,
    revshare_pct     REAL    NOT NULL,
    CHECK ((data_category_id IS NULL) = (cost_type IS NULL))
) STRICT;

CREATE INDEX billing_rule_history_by_segment ON billing_rule_history (segment_num, valid_from, seq);

-- Operator exchange rates: one unit of `currency` is worth `to_settlement` units of the
-- settlement currency from `valid_from` on.
CREATE TABLE exchange_rates (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    currency      TEXT    NOT NULL CHECK (length(currency) = 3 AND currency NOT GLOB '*[^A-Z]*'),
    to_settlement REAL    NOT NULL CHECK (to_settlement > 0),
    valid_from    INTEGER NOT NULL
) STRICT;

-- Buyers (advertisers): an end advertiser or an agency, created by the operator.
CREATE TABLE buyers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    kind       TEXT    NOT NULL CHECK (kind IN ('advertiser', 'agency')),
    created_at INTEGER NOT NULL
) STRICT;

-- People who sign in with a user name and password (`POST /auth`): a provider's user or a
-- buyer's. Passwords are stored as argon2id PHC strings; `generation` is bumped by a password
-- change, which ends that user's sessions.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL UNIQUE COLLATE BINARY,
    password_hash TEXT    NOT NULL,
    member_id     INTEGER REFERENCES members (member_id),
    buyer_id      INTEGER REFERENCES buyers (id),
    generation    INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    CHECK ((member_id IS NULL) <> (buyer_id IS NULL))
) STRICT;

-- Bidder credentials for the metering endpoint. Only the SHA-256 of the 256-bit token is kept.
CREATE TABLE bidders (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    token_hash TEXT    NOT NULL UNIQUE,
    revoked    INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    created_at INTEGER NOT NULL
) STRICT;
