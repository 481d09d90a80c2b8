-- All folders, or those of provider ?1 when it is not NULL.
SELECT id, num, provider_id, name, id_type, id_vendor, created_at
FROM folders
WHERE ?1 IS NULL OR provider_id = ?1
ORDER BY num
