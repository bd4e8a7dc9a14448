"""Dialogue maps: JSON scripts of states, playlists, intents, entities and FAQ entries."""
