-- segmart control-plane catalog, schema version 1.
--
-- Identifiers are lowercase hyphenated UUIDs stored as text; times are milliseconds since the
-- Unix epoch; booleans are 0 or 1. Every table is STRICT so a wrongly typed value is refused
-- instead of silently stored. Nothing is ever deleted, so folder and segment numbers stay dense
-- and are never reused.

-- Data provider accounts (tenants).
CREATE TABLE providers (
    id         TEXT    NOT NULL PRIMARY KEY,
    name       TEXT    NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

-- Segment provider folders (`segmentProviderId`). `num` is the small number profile keys use
-- instead of the UUID: 1, 2, 3… in creation order.
CREATE TABLE folders (
    id          TEXT    NOT NULL PRIMARY KEY,
    num         INTEGER NOT NULL UNIQUE CHECK (num BETWEEN 1 AND 4294967295),
    provider_id TEXT    NOT NULL REFERENCES providers (id),
    name        TEXT    NOT NULL,
    id_type     TEXT    NOT NULL CHECK (id_type IN ('cookie', 'maid', 'ppid', 'extended_id', 'ip')),
    -- Only extended-id folders name a vendor.
    id_vendor   TEXT    CHECK ((id_type = 'extended_id') = (id_vendor IS NOT NULL)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX folders_by_provider ON folders (provider_id);

-- OAuth2 clients of the client-credentials grant. Only the hash of the secret is stored.
CREATE TABLE oauth_clients (
    id          TEXT    NOT NULL PRIMARY KEY,
    provider_id TEXT    NOT NULL REFERENCES providers (id),
    name        TEXT    NOT NULL,
    -- Permission bits: 1 dmp_profile_read, 2 dmp_profile, 4 dmp_segment_read, 8 dmp_segment.
    permissions INTEGER NOT NULL CHECK (permissions BETWEEN 0 AND 15),
    secret_hash TEXT    NOT NULL,
    -- Bumped by every secret rotation; tokens carry it.
    generation  INTEGER NOT NULL DEFAULT 0 CHECK (generation BETWEEN 0 AND 4294967295),
    revoked     INTEGER NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1)),
    created_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX oauth_clients_by_provider ON oauth_clients (provider_id);

-- Segments. `num` is the platform-wide integer id profiles store; AUTOINCREMENT guarantees a
-- number is never handed out twice; it must fit 32 bits. Keys compare byte-wise (case-sensitive).
CREATE TABLE segments (
    num         INTEGER PRIMARY KEY AUTOINCREMENT CHECK (num BETWEEN 1 AND 4294967295),
    folder_id   TEXT    NOT NULL REFERENCES folders (id),
    key         TEXT    NOT NULL COLLATE BINARY,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL,
    -- CPM price.
    price       REAL    NOT NULL CHECK (price >= 0),
    ttl_minutes INTEGER NOT NULL CHECK (ttl_minutes BETWEEN 1 AND 2147483647),
    active      INTEGER NOT NULL CHECK (active IN (0, 1)),
    selectable  INTEGER NOT NULL CHECK (selectable IN (0, 1)),
    parent_key  TEXT    COLLATE BINARY,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    UNIQUE (folder_id, key),
    FOREIGN KEY (folder_id, parent_key) REFERENCES segments (folder_id, key)
) STRICT;

CREATE INDEX segments_by_parent ON segments (folder_id, parent_key);

-- Deployment-wide settings as plain key/value text.
CREATE TABLE settings (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- One row counting committed changes, bumped inside every write transaction, so a server can
-- tell that the catalog changed (for example through the admin CLI) and reload its caches.
CREATE TABLE catalog_generation (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
) STRICT;

INSERT INTO catalog_generation (id, value) VALUES (1, 0);
