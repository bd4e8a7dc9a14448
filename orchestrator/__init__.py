"""Per-call dialogue orchestration: the Orchestrator, its dialogue maps, providers and metrics."""
