"""Outbound HTTP to client-supplied URLs (``audio_url``, ``webhook_url``), SSRF-safe.

A URL a client gives us must not reach the server's own network. Every connection goes
through :class:`GuardedBackend`: it resolves the host itself, refuses the connection
unless every address is public, and connects to the address it vetted, so a DNS answer
that changes between the check and the connect (rebinding) changes nothing. Redirects
are followed by hand, each hop checked again, and downloads are capped in size and time.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore

from dsu.errors import BadRequest, DSUError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Cloud instance metadata endpoints: refused even when private addresses are allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECTS = (301, 302, 303, 307, 308)


class UrlNotAllowed(BadRequest):
    """A URL points at an address the service may not contact, or is not http(s)."""

    code = "url_not_allowed"


class FetchFailed(DSUError):
    """A download or delivery failed: unreachable host, HTTP error, too big or too slow."""

    code = "fetch_failed"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA), in resolver order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchFailed(f"cannot resolve host {host!r}: {exc}") from None
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]).split("%", 1)[0], None)
    return list(seen)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, NAT64), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AddressPolicy:
    """Which resolved addresses outbound connections may reach.

    Attributes:
        allow_private: also allow loopback, private, link-local and other non-public
            addresses (a trusted network); metadata endpoints stay refused.
        allowlist: networks allowed even though not public.
    """

    allow_private: bool = False
    allowlist: tuple[IPNetwork, ...] = ()

    def refusal(self, address: str) -> str | None:
        """Why ``address`` may not be contacted, or None when it may."""
        ip: IPAddress = ipaddress.ip_address(address)
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id:
                ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
            embedded = _embedded_ipv4(ip)
            if embedded is not None:
                inner = self.refusal(str(embedded))
                return None if inner is None else f"{ip} embeds {embedded}: {inner}"
        if ip in METADATA_ADDRESSES:
            return f"{ip} is a cloud metadata address"
        if any(ip in net for net in self.allowlist):
            return None
        kind = _non_public_kind(ip)
        if kind is None or self.allow_private:
            return None
        return f"{ip} is a {kind} address"


def _non_public_kind(ip: IPAddress) -> str | None:
    """The reason ``ip`` is not a public unicast address, or None for a public one."""
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
    )
    for kind, hit in checks:
        if hit:
            return kind
    # Python's is_global also excludes shared address space (100.64/10) and the like.
    return None if ip.is_global else "non-public"


@dataclass(frozen=True)
class Target:
    """A checked URL: scheme, host and port, ready to request."""

    url: str
    scheme: str
    host: str
    port: int


def parse_url(url: str, what: str = "URL") -> Target:
    """Check the shape of an outbound URL (http/https, a host); raise UrlNotAllowed."""
    if len(url) > 2048:
        raise UrlNotAllowed(f"{what} is longer than 2048 characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UrlNotAllowed(f"{what} is not a valid URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlNotAllowed(f"{what} must be an http or https URL, got {url[:100]!r}")
    host = parts.hostname
    if not host:
        raise UrlNotAllowed(f"{what} has no host: {url[:100]!r}")
    if any(c.isspace() for c in url):
        raise UrlNotAllowed(f"{what} contains whitespace")
    return Target(url, scheme, host, port or (443 if scheme == "https" else 80))


def vet_addresses(
    host: str, port: int, policy: AddressPolicy, resolver: Resolver, what: str = "URL"
) -> list[str]:
    """Resolve ``host`` and return its addresses; raise UrlNotAllowed if any is refused.

    All addresses must pass, not just one: a name with one public and one private address
    would otherwise let the connection land on the private one.
    """
    addresses = resolver(host, port)
    if not addresses:
        raise FetchFailed(f"host {host!r} has no address")
    for address in addresses:
        reason = policy.refusal(address)
        if reason is not None:
            raise UrlNotAllowed(
                f"{what} host {host!r} resolves to a non-public address ({reason}); "
                "only public addresses may be contacted"
            )
    return addresses


def vet_url(
    url: str, policy: AddressPolicy, resolver: Resolver = system_resolver, what: str = "URL"
) -> Target:
    """Check a URL's shape and every address of its host; raise UrlNotAllowed."""
    target = parse_url(url, what)
    vet_addresses(target.host, target.port, policy, resolver, what)
    return target


class GuardedBackend(httpcore.SyncBackend):
    """An httpcore network backend that connects only to vetted addresses.

    httpcore hands ``connect_tcp`` the URL's host name; this backend resolves it, vets
    every address and connects to a vetted one, so the address checked is the address
    used.
    """

    def __init__(self, policy: AddressPolicy, resolver: Resolver = system_resolver) -> None:
        super().__init__()
        self.policy = policy
        self.resolver = resolver

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = vet_addresses(host.strip("[]"), port, self.policy, self.resolver)
        last: Exception | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


@dataclass(frozen=True)
class Response:
    """What a webhook delivery got back."""

    status: int
    elapsed: float


class Fetcher:
    """Blocking outbound HTTP through :class:`GuardedBackend` (used from worker threads)."""

    def __init__(
        self,
        policy: AddressPolicy,
        resolver: Resolver = system_resolver,
        max_redirects: int = 5,
        user_agent: str = "dsu-service",
    ) -> None:
        self.policy = policy
        self.resolver = resolver
        self.max_redirects = max_redirects
        self.user_agent = user_agent
        self._pool = httpcore.ConnectionPool(
            network_backend=GuardedBackend(policy, resolver), max_connections=4, retries=0
        )

    def close(self) -> None:
        self._pool.close()

    def _timeouts(self, seconds: float) -> dict[str, float]:
        return {"connect": seconds, "read": seconds, "write": seconds, "pool": seconds}

    @contextmanager
    def _open(self, url: str, timeout: float) -> Iterator[tuple[str, httpcore.Response]]:
        """GET ``url`` following redirects, each hop vetted; yield (final URL, response)."""
        current = url
        for _ in range(self.max_redirects + 1):
            target = vet_url(current, self.policy, self.resolver, "audio_url")
            with self._pool.stream(
                "GET",
                target.url,
                headers={"User-Agent": self.user_agent, "Accept": "*/*"},
                extensions={"timeout": self._timeouts(timeout)},
            ) as response:
                if response.status in _REDIRECTS:
                    location = _header(response, "location")
                    if not location:
                        raise FetchFailed(
                            f"audio_url answered HTTP {response.status} without a Location"
                        )
                    current = urljoin(current, location)
                    continue
                yield current, response
                return
        raise FetchFailed(f"audio_url redirected more than {self.max_redirects} times")

    def download(self, url: str, dest: Path, max_bytes: int, timeout: float) -> int:
        """Stream ``url`` into ``dest``; return the byte count.

        Raises:
            UrlNotAllowed: the URL, or a redirect, points at a refused address.
            FetchFailed: HTTP error, more than ``max_bytes``, more than ``timeout`` seconds
                in total, or a network failure. ``dest`` is removed on any failure.
        """
        deadline = time.monotonic() + timeout
        size = 0
        try:
            with self._open(url, min(timeout, 30.0)) as (_, response):
                if response.status >= 400:
                    raise FetchFailed(f"audio_url answered HTTP {response.status}")
                declared = _header(response, "content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise FetchFailed(
                        f"audio_url is {int(declared)} bytes, over the {max_bytes}-byte limit"
                    )
                with open(dest, "wb") as out:
                    for chunk in response.iter_stream():
                        size += len(chunk)
                        if size > max_bytes:
                            raise FetchFailed(f"audio_url is over the {max_bytes}-byte limit")
                        if time.monotonic() > deadline:
                            raise FetchFailed(f"audio_url took longer than {timeout:g} s")
                        out.write(chunk)
        except httpcore.TimeoutException:
            dest.unlink(missing_ok=True)
            raise FetchFailed(f"audio_url timed out (limit {timeout:g} s)") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
            dest.unlink(missing_ok=True)
            raise FetchFailed(f"audio_url could not be fetched: {type(e).__name__}: {e}") from None
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        if size == 0:
            dest.unlink(missing_ok=True)
            raise FetchFailed("audio_url returned an empty body")
        return size

    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
        """POST ``body`` to ``url`` without following redirects; return the status.

        Raises UrlNotAllowed for a refused address and FetchFailed for network errors.
        """
        target = vet_url(url, self.policy, self.resolver, "webhook_url")
        start = time.monotonic()
        try:
            # The receiver's body is never read: it could be arbitrarily large.
            with self._pool.stream(
                "POST",
                target.url,
                headers={"User-Agent": self.user_agent, **headers},
                content=body,
                extensions={"timeout": self._timeouts(timeout)},
            ) as response:
                status = response.status
        except httpcore.TimeoutException:
            raise FetchFailed(f"webhook_url timed out after {timeout:g} s") from None
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol) as e:
            raise FetchFailed(f"webhook_url unreachable: {type(e).__name__}: {e}") from None
        return Response(status, time.monotonic() - start)


def _header(response: httpcore.Response, name: str) -> str | None:
    wanted = name.encode().lower()
    for key, value in response.headers:
        if key.lower() == wanted:
            return value.decode("latin-1").strip()
    return None
