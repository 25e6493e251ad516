"""ZOO_FETCH_ALLOW_HOSTS: the hosts and networks that URLs from Civitai data may reach although they are not public
(a private mirror, a test's local server). Everything else that resolves to a loopback, private, link-local,
reserved, multicast or unspecified address is refused (crawlers.url_guard).

The value is comma-separated entries, each one of:
    name or name:port          the URL's host name, as written (case-insensitive); any address it resolves to
    address or address:port    an IP address the host resolves to (IPv6 with a port in brackets: [fd00::1]:8080)
    network                    a CIDR block of addresses, any port (10.0.0.0/8, fd00::/8)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from collections.abc import Iterable

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*\.?$")


@dataclass(frozen=True)
class AllowEntry:
    """One entry: a host name or an address (each with an optional port), or a network."""

    text: str
    name: str | None = None
    address: Address | None = None
    network: Network | None = None
    port: int | None = None

    def allows(self, host: str, port: int, address: Address) -> bool:
        if self.network is not None:
            return address.version == self.network.version and address in self.network
        if self.port is not None and self.port != port:
            return False
        if self.name is not None:
            return host.lower().rstrip(".") == self.name
        return address == self.address


def parse_allow_entry(text: str) -> AllowEntry:
    """One entry of the setting; ValueError says what is wrong with it."""
    entry = text.strip()
    if not entry:
        raise ValueError("an empty entry")
    if "/" in entry:
        try:
            return AllowEntry(entry, network=ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not a network in CIDR form (e.g. 10.0.0.0/8)") from None
    host, port = entry, None
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{entry!r}: an IPv6 address with a port is written [address]:port")
        port_text = rest[1:] if rest else None
    elif entry.count(":") == 1:
        host, port_text = entry.split(":")
    else:
        port_text = None  # a name, an IPv4 address, or a bare IPv6 address
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"{entry!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    try:
        return AllowEntry(entry, address=ipaddress.ip_address(host), port=port)
    except ValueError:
        pass
    name = host.lower().rstrip(".")
    if not _NAME.match(name):
        raise ValueError(f"{entry!r} is not a host name, host:port, IP address or CIDR network")
    return AllowEntry(entry, name=name, port=port)


def parse_allow_list(value: str | Iterable[str] | None) -> tuple[AllowEntry, ...]:
    """The entries of a comma-separated value (or of a list of entries); empty entries are skipped."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    return tuple(parse_allow_entry(part) for part in parts if part.strip())
