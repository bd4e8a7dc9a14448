"""Speech synthesis adapters."""
