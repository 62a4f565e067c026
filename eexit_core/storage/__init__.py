"""Storage: the workspace on disk, atomic artifacts, the DuckDB results store, schemas and provenance."""
