"""Audio caches: in-memory (default) and Redis."""
