"""Which addresses the viewer may listen on: loopback unless the user explicitly allows more."""

from __future__ import annotations

import ipaddress

from nerfxl.errors import ConfigError


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str, allow_remote: bool) -> str | None:
    """A one-line ConfigError for a non-loopback ``host`` without ``allow_remote``; the warning to print
    when it is allowed (None for loopback)."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(f"--host {host} would let other machines open the viewer (it serves your model and "
                          f"writes camera paths into the run folder); pass --allow-remote as well to mean it")
    return (f"warning: the viewer listens on {host}: anyone who can reach this machine's port can view the model "
            f"and save camera paths into the run folder")


def check_port(port: int, flag: str = "--port") -> None:
    """A one-line ConfigError for a port that cannot exist (0 picks a free one)."""
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"{flag} {port}: a port lies between 0 and 65535 (0: any free port)")
