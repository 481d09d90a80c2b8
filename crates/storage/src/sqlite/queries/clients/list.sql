-- All clients, or those of provider ?1 when it is not NULL.
SELECT id, provider_id, name, permissions, secret_hash, generation, revoked, created_at
FROM oauth_clients
WHERE ?1 IS NULL OR provider_id = ?1
ORDER BY created_at, id
