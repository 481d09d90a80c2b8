SELECT num, folder_id, key, name, description, price, ttl_minutes, active, selectable,
    parent_key, created_at, updated_at, cost_type, cost_value, currency, advertisers
FROM segments
WHERE folder_id = ?1 AND key = ?2
