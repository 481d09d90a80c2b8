INSERT INTO oauth_clients (id, provider_id, name, permissions, secret_hash, generation, revoked, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, ?6)
RETURNING id, provider_id, name, permissions, secret_hash, generation, revoked, created_at
