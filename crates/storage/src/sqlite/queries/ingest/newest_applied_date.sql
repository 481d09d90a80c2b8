SELECT MAX(file_date)
FROM ingest_files
WHERE provider_id = ?1 AND kind = ?2 AND status = 'applied'
