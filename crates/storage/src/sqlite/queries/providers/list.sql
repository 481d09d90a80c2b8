SELECT id, name, dmp_id, default_cost_type, default_cost_value, default_currency, created_at
FROM providers
ORDER BY created_at, id
