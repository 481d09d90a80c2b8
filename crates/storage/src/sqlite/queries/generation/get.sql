SELECT value FROM catalog_generation WHERE id = 1
