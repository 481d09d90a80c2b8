INSERT INTO segments (
    folder_id, key, name, description, price, ttl_minutes, active, selectable, parent_key,
    created_at, updated_at
)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)
RETURNING num, folder_id, key, name, description, price, ttl_minutes, active, selectable,
    parent_key, created_at, updated_at, cost_type, cost_value, currency, advertisers
