UPDATE providers
SET dmp_id = ?2
WHERE id = ?1
RETURNING id, name, dmp_id, default_cost_type, default_cost_value, default_currency, created_at
