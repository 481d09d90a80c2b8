-- The delivery of provider ?1, kind ?2, FILE ID ?3 that is queued, applying or applied.
SELECT id
FROM ingest_files
WHERE provider_id = ?1 AND kind = ?2 AND file_id = ?3
    AND status IN ('queued', 'applying', 'applied')
