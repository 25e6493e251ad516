"""Fetching URLs that came from Civitai data without letting them reach into our own network (SSRF).

`UrlGuard.check(url)` resolves the host once and refuses the URL when any address it resolves to is loopback,
private, link-local (cloud metadata at 169.254.169.254), shared (carrier-grade NAT), reserved, multicast or
unspecified, including such IPv4 addresses inside IPv6 ones (IPv4-mapped ::ffff:a.b.c.d, 6to4 2002::/16, NAT64
64:ff9b::/96). Hosts on the ZOO_FETCH_ALLOW_HOSTS allow-list (config.allow_list) pass: a private mirror, a test's
local server.

`PinnedPools` then connects to an address that was checked, never to the name: urllib3 connection pools whose
connections open their socket to the pinned address (through a `connect` function that tests can replace) while the
Host header, TLS SNI and certificate check keep the host name. So no second DNS lookup can answer differently
(DNS rebinding). Callers follow redirects by hand and check every hop.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from config.allow_list import Address, AllowEntry, parse_allow_list

Resolver = Callable[[str, int], Sequence[str]]
Connect = Callable[[tuple[str, int], "float | None"], socket.socket]

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")
ALLOW_HINT = "set ZOO_FETCH_ALLOW_HOSTS to let a private mirror through"


class RefusedURL(ValueError):
    """A URL the guard will not fetch: its scheme, its host, or an address its host resolves to."""


class UnresolvableHost(OSError):
    """The host name did not resolve (offline, or no such host)."""


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses getaddrinfo gives for a host (the one lookup of a fetch), without duplicates, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def system_connect(address: tuple[str, int], timeout: float | None) -> socket.socket:
    """Open a TCP connection to exactly this address (an IP literal: no name lookup happens here)."""
    return socket.create_connection(address, timeout=timeout)


def unsafe_reason(address: Address) -> str | None:
    """Why an address must not be reached from URLs in crawled data, or None for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        for label, embedded in (("IPv4-mapped", address.ipv4_mapped), ("6to4", address.sixtofour),
                                ("NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
                                 if address in _NAT64 else None)):
            if embedded is not None:
                inner = unsafe_reason(embedded)
                return f"{label} {inner}" if inner else None
    for flag, label in (("is_unspecified", "unspecified"), ("is_loopback", "loopback"),
                        ("is_link_local", "link-local"), ("is_multicast", "multicast"), ("is_reserved", "reserved"),
                        ("is_private", "private"), ("is_site_local", "site-local")):
        if getattr(address, flag, False):
            return label
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (carrier-grade NAT)"
    if not address.is_global:
        return "not globally routable"
    return None


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (addresses, in order) and what to ask for there."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]
    request_target: str  # path and query


def _parts(url: str) -> tuple[str, str, int, str]:
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except (ValueError, AttributeError):
        raise RefusedURL(f"not a URL: {url!r}") from None
    if scheme not in ("http", "https"):
        raise RefusedURL(f"scheme {scheme or '(none)'!r} refused (only http and https)")
    if not host:
        raise RefusedURL(f"no host in {url!r}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return scheme, host, port or (443 if scheme == "https" else 80), target


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class UrlGuard:
    """Decides whether a URL may be fetched, resolving its host once; see the module's docstring."""

    def __init__(self, allow: Iterable[str] | str | None = (), resolver: Resolver = system_resolver) -> None:
        self.allow: tuple[AllowEntry, ...] = parse_allow_list(allow)
        self.resolver = resolver

    @property
    def allow_texts(self) -> tuple[str, ...]:
        """The allow-list as its setting's entries."""
        return tuple(entry.text for entry in self.allow)

    def __repr__(self) -> str:
        return f"UrlGuard(allow={list(self.allow_texts)!r})"

    def _allowed(self, host: str, port: int, address: Address) -> bool:
        return any(entry.allows(host, port, address) for entry in self.allow)

    def _refuse_unsafe(self, host: str, port: int, address: Address, as_given: str = "") -> None:
        reason = unsafe_reason(address)
        if reason is not None and not self._allowed(host, port, address):
            what = host if _literal(host) is not None else f"{host} resolves to {as_given or address}"
            raise RefusedURL(f"refused: {what} ({reason} address; {ALLOW_HINT})")

    def check_without_lookup(self, url: str) -> None:
        """What can be checked without DNS (for answers from a cache): the scheme, and a host given as an address."""
        _, host, port, _ = _parts(url)
        literal = _literal(host)
        if literal is not None:
            self._refuse_unsafe(host, port, literal)

    def check(self, url: str) -> Target:
        """The URL's target with the addresses to connect to; RefusedURL if any address is unsafe and not allowed,
        UnresolvableHost if the name does not resolve."""
        scheme, host, port, request_target = _parts(url)
        literal = _literal(host)
        if literal is not None:
            found: list[str] = [str(literal)]
        else:
            try:
                found = list(self.resolver(host, port))
            except (OSError, UnicodeError) as error:
                raise UnresolvableHost(f"cannot resolve {host}: {error}") from None
            if not found:
                raise UnresolvableHost(f"cannot resolve {host}: no addresses")
        addresses = []
        for text in found:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise RefusedURL(f"refused: {host} resolves to {text!r}, which is not an IP address") from None
            self._refuse_unsafe(host, port, address, text)  # one unsafe answer refuses the host: no picking around it
            addresses.append(str(address))
        return Target(scheme, host, port, tuple(addresses), request_target)

    def allows(self, url: str) -> bool:
        """True when `check` passes (for handing a URL on to someone else who will fetch it)."""
        try:
            self.check(url)
        except (RefusedURL, UnresolvableHost):
            return False
        return True


# --- connections pinned to the checked address -------------------------------------------------------------------

class _PinnedMixin:
    """A urllib3 connection whose socket goes to `pinned_address` while `host` stays the name (Host, SNI, cert)."""

    def __init__(self, *args, pinned_address: str, connect: Connect, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pinned_address, self._connect = pinned_address, connect

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        try:
            sock = self._connect((self._pinned_address, self.port), timeout)
        except TimeoutError as error:
            raise ConnectTimeoutError(self, f"connection to {self.host} ({self._pinned_address}) timed out") from error
        except OSError as error:
            raise NewConnectionError(self, f"failed to connect to {self.host} ({self._pinned_address}): "
                                           f"{error}") from error
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        return sock


class _PinnedHTTPConnection(_PinnedMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedMixin, HTTPSConnection):
    pass


class _PinnedHTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedPools:
    """Keep-alive connection pools per (scheme, host, port, checked address); the least recently used beyond
    `max_pools` are closed. Thread-safe."""

    def __init__(self, connect: Connect = system_connect, *, ca_certs: str | None = None, maxsize: int = 8,
                 max_pools: int = 32) -> None:
        self.connect = connect
        self.ca_certs = ca_certs or certifi.where()
        self.maxsize, self.max_pools = maxsize, max_pools
        self._pools: OrderedDict[tuple, urllib3.HTTPConnectionPool] = OrderedDict()
        self._lock = threading.Lock()

    def pool(self, target: Target, address: str) -> urllib3.HTTPConnectionPool:
        key = (target.scheme, target.host, target.port, address)
        with self._lock:
            pool = self._pools.get(key)
            if pool is not None:
                self._pools.move_to_end(key)
                return pool
            options = {"maxsize": self.maxsize, "block": False, "retries": False, "pinned_address": address,
                       "connect": self.connect}
            if target.scheme == "https":
                pool = _PinnedHTTPSPool(target.host, target.port, cert_reqs="CERT_REQUIRED", ca_certs=self.ca_certs,
                                        **options)
            else:
                pool = _PinnedHTTPPool(target.host, target.port, **options)
            self._pools[key] = pool
            while len(self._pools) > self.max_pools:
                _, old = self._pools.popitem(last=False)
                old.close()
            return pool

    def get(self, target: Target, headers: dict[str, str], timeout: urllib3.Timeout) -> urllib3.BaseHTTPResponse:
        """GET the target from the first of its checked addresses that accepts a connection; the body is left to
        stream (preload_content=False) and redirects are returned, not followed."""
        last: Exception | None = None
        for address in target.addresses:
            try:
                return self.pool(target, address).urlopen(
                    "GET", target.request_target, headers=headers, redirect=False, retries=False,
                    preload_content=False, decode_content=False, timeout=timeout, assert_same_host=False)
            except (NewConnectionError, ConnectTimeoutError) as error:
                last = error
        assert last is not None  # a Target always has at least one address
        raise last

    def close(self) -> None:
        with self._lock:
            pools, self._pools = list(self._pools.values()), OrderedDict()
        for pool in pools:
            pool.close()
