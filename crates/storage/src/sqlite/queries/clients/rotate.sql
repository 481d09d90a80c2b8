UPDATE oauth_clients
SET secret_hash = ?2, generation = generation + 1
WHERE id = ?1
RETURNING id, provider_id, name, permissions, secret_hash, generation, revoked, created_at
