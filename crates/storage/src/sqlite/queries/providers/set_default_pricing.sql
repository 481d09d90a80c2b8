-- Sets (or with NULLs clears) provider ?1's default pricing: ?2 cost type, ?3 value, ?4 currency.
UPDATE providers
SET default_cost_type = ?2, default_cost_value = ?3, default_currency = ?4
WHERE id = ?1
RETURNING id, name, dmp_id, default_cost_type, default_cost_value, default_currency, created_at
