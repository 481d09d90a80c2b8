-- One page of folder ?1 after key ?2 (exclusive), in byte order. Keys are never empty, so the
-- first page passes '' as ?2.
SELECT num, folder_id, key, name, description, price, ttl_minutes, active, selectable,
    parent_key, created_at, updated_at, cost_type, cost_value, currency, advertisers
FROM segments
WHERE folder_id = ?1 AND key > ?2
ORDER BY key
LIMIT ?3
