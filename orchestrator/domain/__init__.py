"""Domain types shared by every layer (plain dataclasses, no I/O)."""
