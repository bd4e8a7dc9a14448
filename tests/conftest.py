"""Shared fixtures: provider stand-ins, Redis, espeak speech (tests/conftest_providers.py)."""

pytest_plugins = ["tests.conftest_providers"]
