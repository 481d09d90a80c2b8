-- Returns no row when a folder with this id exists already.
-- Folder numbers are handed out densely from 1; the write transaction holds the database
-- write lock, so no other writer can take the same number in between.
INSERT INTO folders (id, num, provider_id, name, id_type, id_vendor, created_at)
VALUES (?1, (SELECT COALESCE(MAX(num), 0) + 1 FROM folders), ?2, ?3, ?4, ?5, ?6)
ON CONFLICT (id) DO NOTHING
RETURNING id, num, provider_id, name, id_type, id_vendor, created_at
