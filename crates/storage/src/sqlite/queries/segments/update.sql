-- Replaces the writable fields; the number and the creation date stay.
UPDATE segments
SET name = ?3, description = ?4, price = ?5, ttl_minutes = ?6, active = ?7, selectable = ?8,
    parent_key = ?9, updated_at = ?10
WHERE folder_id = ?1 AND key = ?2
RETURNING num, folder_id, key, name, description, price, ttl_minutes, active, selectable,
    parent_key, created_at, updated_at, cost_type, cost_value, currency, advertisers
