"""The one rule for every name and password the bridge puts on the wire to Asterisk (ARI and AMI).

ARI: aioari puts the username, password and app name into the websocket URL without
URL-encoding them. AMI: panoramisk writes the username and secret into `Key: value` lines, where
a line break would inject a header. So both take RFC 3986 unreserved characters only: ASCII
letters, digits and `. _ ~ -`, 1 to 128 of them. Configure Asterisk's `ari.conf` and
`manager.conf` with such values.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

__all__ = ["AsteriskName", "check_asterisk_name"]

_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]{1,128}")


def check_asterisk_name(value: str) -> str:
    """`value` if it is 1-128 unreserved characters; ValueError saying what is allowed otherwise."""
    if not _UNRESERVED.fullmatch(value):
        raise ValueError(
            "use 1 to 128 ASCII letters, digits and . _ ~ - only "
            "(it goes unencoded into the ARI websocket URL and into AMI header lines)"
        )
    return value


# An ARI/AMI username, password (AMI: secret), Stasis app, PJSIP trunk or dialplan context.
AsteriskName = Annotated[str, AfterValidator(check_asterisk_name)]
