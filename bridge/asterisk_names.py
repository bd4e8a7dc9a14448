"""The rules for the names and passwords the bridge puts on the wire to Asterisk (ARI and AMI).

Names (ARI username, password and app; AMI username, trunk, context): aioari puts the ARI ones
into the websocket URL without URL-encoding them, so they take RFC 3986 unreserved characters
only: ASCII letters, digits and `. _ ~ -`, 1 to 128 of them (`AsteriskName`). The AMI names
follow the same rule, so one name works on both interfaces.

The AMI secret (`AmiSecret`): panoramisk writes it into a `Secret: value` line, where only a
line break could inject another header, so it may hold any character but CR and LF (1 to 128
of them): `!`, `@`, spaces and non-ASCII letters are fine. Configure Asterisk's `ari.conf` and
`manager.conf` with the same values.
"""

from __future__ import annotations

import logging
import re
from typing import Annotated

from pydantic import AfterValidator

__all__ = [
    "DEFAULT_CREDENTIAL",
    "AmiSecret",
    "AsteriskName",
    "check_ami_secret",
    "check_asterisk_name",
    "warn_if_default_credentials",
]

log = logging.getLogger(__name__)

# The ARI/AMI username and password shipped in asterisk_conf/ (ari.conf, manager.conf) and as the
# settings' defaults: fine on a lab's loopback, a known password anywhere else.
DEFAULT_CREDENTIAL = "voicebridge"
_warned: set[str] = set()

_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]{1,128}")
_ONE_LINE = re.compile(r"[^\r\n]{1,128}")


def check_asterisk_name(value: str) -> str:
    """`value` if it is 1-128 unreserved characters; ValueError saying what is allowed otherwise."""
    if not _UNRESERVED.fullmatch(value):
        raise ValueError(
            "use 1 to 128 ASCII letters, digits and . _ ~ - only "
            "(it goes unencoded into ARI requests, the HTTP Basic header and AMI header lines)"
        )
    return value


# An ARI/AMI username, password (AMI: secret), Stasis app, PJSIP trunk or dialplan context.
AsteriskName = Annotated[str, AfterValidator(check_asterisk_name)]


def check_ami_secret(value: str) -> str:
    """`value` if it is 1-128 characters without CR or LF; ValueError saying what is allowed otherwise."""
    if not _ONE_LINE.fullmatch(value):
        raise ValueError("use 1 to 128 characters, no line breaks (it goes into an AMI header line)")
    return value


# The AMI secret: any characters but CR and LF.
AmiSecret = Annotated[str, AfterValidator(check_ami_secret)]


def warn_if_default_credentials(interface: str, where: str, username: str, password: str) -> bool:
    """Log a WARNING (once per process and interface) if `password` is the shipped default.

    `interface` is "ARI" or "AMI", `where` the settings that hold the credentials. Returns
    whether the credentials are the default ones.
    """
    if password != DEFAULT_CREDENTIAL:
        return False
    if interface not in _warned:
        _warned.add(interface)
        log.warning(
            "%s uses the default password of user %r (%s); anyone who can reach Asterisk's %s "
            "port can control calls: set your own here and in Asterisk's %s",
            interface,
            username,
            where,
            interface,
            "ari.conf" if interface == "ARI" else "manager.conf",
        )
    return True
