SELECT COUNT(*) FROM segments WHERE folder_id = ?1
