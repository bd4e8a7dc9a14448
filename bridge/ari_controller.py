"""The former home of the ARI controller, kept importable: everything now lives in `bridge.ari`.

New code imports from `bridge.ari`; this module only re-exports its public names for code that
still uses the old path (branches written before the split).
"""

from bridge.ari import AriCall, AriController, AriError, AriSettings, CallHandler

__all__ = ["AriCall", "AriController", "AriError", "AriSettings", "CallHandler"]
