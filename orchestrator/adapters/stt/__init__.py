"""Speech recognition adapters."""
