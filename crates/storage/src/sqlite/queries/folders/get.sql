SELECT id, num, provider_id, name, id_type, id_vendor, created_at
FROM folders
WHERE id = ?1
