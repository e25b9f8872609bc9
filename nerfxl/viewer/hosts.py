"""Which addresses the viewer may listen on (loopback unless the user explicitly allows more), and the
checks of its serving flags, shared by `nerfxl view` and `nerfxl train --viewer`."""

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


def check_host(host: str, allow_remote: bool, prefix: str = "--") -> str | None:
    """A one-line ConfigError for a non-loopback ``host`` without ``allow_remote`` (flags named with
    ``prefix``); the warning to print when it is allowed (None for loopback)."""
    if is_loopback(host):
        return None
    if not allow_remote:
        raise ConfigError(f"{prefix}host {host} would let other machines open the viewer (it serves your model and "
                          f"writes camera paths into the run folder); pass {prefix}allow-remote as well to mean it")
    return (f"warning: the viewer listens on {host}: anyone who can reach this machine's port can view the model "
            f"and save camera paths into the run folder")


def check_viewer_flags(host: str, allow_remote: bool, port: int, resolution: int, prefix: str = "--") -> str | None:
    """One-line ConfigErrors for impossible serving flags (named with ``prefix``: "--" for `nerfxl view`,
    "--viewer-" for `nerfxl train`); the warning to print for an allowed remote host (None for loopback)."""
    if not 0 <= int(port) <= 65535:
        raise ConfigError(f"{prefix}port {port}: a port lies between 0 and 65535 (0: any free port)")
    if resolution < 16:
        raise ConfigError(f"{prefix}resolution {resolution}: must be at least 16 pixels")
    return check_host(host, allow_remote, prefix)
