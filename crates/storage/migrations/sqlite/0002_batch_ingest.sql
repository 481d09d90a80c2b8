-- segmart control-plane catalog, schema version 2: batch file ingestion.
--
-- Adds the provider's DMP ID (the first part of its batch file names), the pricing columns a
-- taxonomy file carries, a provider's default pricing, and the registry of delivered files that
-- makes every FILE ID take effect exactly once.

-- The DMP ID a provider's batch files are named with: 1..=64 characters of [A-Za-z0-9_-],
-- unique across the deployment; NULL until the operator sets one.
ALTER TABLE providers ADD COLUMN dmp_id TEXT COLLATE BINARY
    CHECK (dmp_id IS NULL OR (length(dmp_id) BETWEEN 1 AND 64 AND dmp_id NOT GLOB '*[^A-Za-z0-9_-]*'));

CREATE UNIQUE INDEX providers_by_dmp_id ON providers (dmp_id) WHERE dmp_id IS NOT NULL;

-- A provider's default pricing (seed 003: a segment's own cost applies only when it is 0 or the
-- default is unset). All three are set together or not at all.
ALTER TABLE providers ADD COLUMN default_cost_type TEXT
    CHECK (default_cost_type IS NULL OR default_cost_type IN ('RATE', 'FIX'));
ALTER TABLE providers ADD COLUMN default_cost_value REAL
    CHECK (default_cost_value IS NULL OR default_cost_value >= 0);
ALTER TABLE providers ADD COLUMN default_currency TEXT
    CHECK (default_currency IS NULL OR default_currency IN ('RUB', 'USD'));

-- A segment's own pricing from a taxonomy file: RATE (percent of media cost) or FIX (CPM),
-- in RUB or USD, and the advertisers it is restricted to (one id per line; NULL means every
-- advertiser).
ALTER TABLE segments ADD COLUMN cost_type TEXT
    CHECK (cost_type IS NULL OR cost_type IN ('RATE', 'FIX'));
ALTER TABLE segments ADD COLUMN cost_value REAL
    CHECK (cost_value IS NULL OR cost_value >= 0);
ALTER TABLE segments ADD COLUMN currency TEXT
    CHECK (currency IS NULL OR currency IN ('RUB', 'USD'));
ALTER TABLE segments ADD COLUMN advertisers TEXT;

-- Every delivery of a batch file (data or taxonomy), whatever way it came in. A delivery is
-- queued, then applying, then applied; or rejected whole (with `reason`); or a duplicate of an
-- earlier delivery of the same FILE ID. At most one delivery per (provider, kind, FILE ID) is
-- ever queued, applying or applied (the partial unique index below): that is "exactly once".
-- A rejected delivery never took effect, so the same FILE ID may be delivered again.
--
-- `apply_at` is fixed when the delivery starts applying and kept across restarts: a delivery
-- found `applying` after a crash is redone from its first line with the same time, so every
-- expiry it writes is the same and the redo changes nothing that was already applied.
--
-- Counts by name (`rejects`, `unknown_segments`) are text with one `name<TAB>count` per line;
-- names never hold tabs or line breaks.
CREATE TABLE ingest_files (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id         TEXT    NOT NULL REFERENCES providers (id),
    kind                TEXT    NOT NULL CHECK (kind IN ('data', 'taxonomy')),
    file_id             TEXT    NOT NULL COLLATE BINARY,
    dmp_id              TEXT    NOT NULL,
    -- The DATE of the file name, seconds since the Unix epoch (UTC).
    file_date           INTEGER NOT NULL,
    -- The canonical file name.
    name                TEXT    NOT NULL,
    source              TEXT    NOT NULL CHECK (source IN ('upload', 'drop', 'cli')),
    -- Where the delivered bytes wait while queued or applying.
    spool_path          TEXT,
    bytes               INTEGER NOT NULL CHECK (bytes >= 0),
    status              TEXT    NOT NULL
        CHECK (status IN ('queued', 'applying', 'applied', 'rejected', 'duplicate')),
    -- Why a delivery was rejected whole: a stable code and a human message.
    reason_code         TEXT,
    reason              TEXT,
    -- The delivery this one duplicates.
    duplicate_of        INTEGER REFERENCES ingest_files (id),
    received_at         INTEGER NOT NULL,
    apply_at            INTEGER,
    started_at          INTEGER,
    finished_at         INTEGER,
    lines_read          INTEGER NOT NULL DEFAULT 0,
    lines_applied       INTEGER NOT NULL DEFAULT 0,
    lines_rejected      INTEGER NOT NULL DEFAULT 0,
    blank_lines         INTEGER NOT NULL DEFAULT 0,
    memberships_added   INTEGER NOT NULL DEFAULT 0,
    memberships_removed INTEGER NOT NULL DEFAULT 0,
    segments_upserted   INTEGER NOT NULL DEFAULT 0,
    rejects             TEXT    NOT NULL DEFAULT '',
    unknown_segments    TEXT    NOT NULL DEFAULT '',
    -- Milliseconds spent checking the gzip stream, and applying (check included).
    check_millis        INTEGER NOT NULL DEFAULT 0,
    duration_millis     INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE UNIQUE INDEX ingest_files_effective
    ON ingest_files (provider_id, kind, file_id)
    WHERE status IN ('queued', 'applying', 'applied');

CREATE INDEX ingest_files_by_provider ON ingest_files (provider_id, id);
CREATE INDEX ingest_files_by_status ON ingest_files (status, id);
