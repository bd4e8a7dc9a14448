"""ARI (Asterisk REST Interface): turns each call entering our Stasis app into an AudioSocket
stream and a call handler.

- `settings`: `AriSettings`, the `[ari]` section.
- `call`: what a handler gets: `AriCall`, the `CallHandler` type, `AriError`.
- `connection`: `AriConnection`, the events websocket and the REST client, reconnected with backoff.
- `http`: `AriHttpClient`, aioari's HTTP client with Basic auth in a header and TLS (https/wss).
- `session`: `CallSession`, the controller's state of one call.
- `legs`: `CallLegs`, a call's channels and bridge set up and torn down in the order Asterisk 22
  needs, including the Asterisk 22.10.1 stall workaround (never create and tear down AudioSocket
  channels at the same time).
- `transfer`: `Transfers`, a call's hand-over to an operator and the bridge left behind it.
- `reconcile`: `Reconciler`, the live calls checked against Asterisk after every reconnection.
- `controller`: `AriController`, event dispatch, one owned task per call, refusals.
"""

from bridge.ari.call import AriCall, AriError, CallHandler
from bridge.ari.controller import AriController
from bridge.ari.settings import AriSettings

__all__ = ["AriCall", "AriController", "AriError", "AriSettings", "CallHandler"]
