"""The knowledge base: regions, services, authorities, responsibility and lookup."""
