-- A taxonomy entry: creates segment ?2 in folder ?1 with the segment API's defaults (empty
-- description, price 0, TTL 43200 minutes, active, selectable, no parent), or renames and
-- reprices it, keeping its other fields. ?4..?7: cost_type, cost_value, currency, advertisers.
INSERT INTO segments (
    folder_id, key, name, description, price, ttl_minutes, active, selectable, parent_key,
    created_at, updated_at, cost_type, cost_value, currency, advertisers
)
VALUES (?1, ?2, ?3, '', 0, 43200, 1, 1, NULL, ?8, ?8, ?4, ?5, ?6, ?7)
ON CONFLICT (folder_id, key) DO UPDATE SET
    name = excluded.name, cost_type = excluded.cost_type, cost_value = excluded.cost_value,
    currency = excluded.currency, advertisers = excluded.advertisers,
    updated_at = excluded.updated_at
RETURNING num, folder_id, key, name, description, price, ttl_minutes, active, selectable,
    parent_key, created_at, updated_at, cost_type, cost_value, currency, advertisers
