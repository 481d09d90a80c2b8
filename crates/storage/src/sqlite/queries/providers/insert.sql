-- Returns no row when a provider with this id exists already.
INSERT INTO providers (id, name, created_at)
VALUES (?1, ?2, ?3)
ON CONFLICT (id) DO NOTHING
RETURNING id, name, dmp_id, default_cost_type, default_cost_value, default_currency, created_at
