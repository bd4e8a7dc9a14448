"""Local intent classification: embedders, a character n-gram embedder, entity extraction."""
