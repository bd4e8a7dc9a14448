"""Text embedding adapters."""
