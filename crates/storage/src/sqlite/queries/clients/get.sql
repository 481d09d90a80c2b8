SELECT id, provider_id, name, permissions, secret_hash, generation, revoked, created_at
FROM oauth_clients
WHERE id = ?1
