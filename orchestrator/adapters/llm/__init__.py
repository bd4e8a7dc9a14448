"""LLM adapters and the safety gate on their output."""
