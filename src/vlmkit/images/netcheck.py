"""Which network addresses vlmkit may fetch images from (the SSRF policy).

Only globally routable unicast addresses are fetched by default. Loopback, private, link-local,
multicast, reserved, unspecified and shared (carrier-grade NAT) addresses are refused, and so are
IPv6 forms that carry such an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64, 6to4), unless the
host name or the address is in ``FetchOptions.allow_hosts``. Cloud metadata endpoints are refused even
inside an allowed network: only naming the exact address (or the host name) allows them.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Protocol

from vlmkit.errors import ImageFetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

METADATA_ADDRESSES: frozenset[IPAddress] = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OCI, DigitalOcean, ...
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
    )
)
METADATA_HOSTS = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})

_SHARED = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 well-known prefix
_COMPAT = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible addresses


class AllowRemedy(Protocol):
    """How the reader of a refusal allows a host (:class:`~vlmkit.images.fetch.FetchRemedies`)."""

    @property
    def allow_hosts(self) -> str: ...


class AllowList(Protocol):
    """What the checks read from the fetch options (:class:`~vlmkit.images.fetch.FetchOptions`), named here
    so that the policy depends on nothing of the fetcher that uses it."""

    @property
    def allow_hosts(self) -> frozenset[str]: ...

    @property
    def remedies(self) -> AllowRemedy: ...


def _refused(options: AllowList) -> str:
    """Why such addresses are refused, and how to allow one in the words of the caller's face."""
    return (
        "vlmkit does not fetch loopback, private, link-local or metadata addresses unless the host is "
        f"allowed: {options.remedies.allow_hosts}"
    )


def normalize_host(host: str) -> str:
    """A host name as compared against ``allow_hosts``: lower case, no trailing dot, no brackets."""
    return host.strip("[]").rstrip(".").lower()


@functools.lru_cache(maxsize=64)
def _parse_allow_hosts(allow_hosts: frozenset[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in allow_hosts:
        try:
            networks.append(ipaddress.ip_network(entry.strip().strip("[]"), strict=False))
        except ValueError:
            names.add(normalize_host(entry.strip()))
    return frozenset(names), tuple(networks)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(normalize_host(host))
    except ValueError:
        return None


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, NAT64, 6to4), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _COMPAT and int(ip) > 1):  # :: and ::1 are not IPv4-compatible
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _category(ip: IPAddress) -> str | None:
    """Why ``ip`` (a plain address, not an embedding) is not fetched by default, or None."""
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED:
        return "a shared (carrier-grade NAT) address"
    if ip.is_reserved:
        return "a reserved address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


def check_host_name(host: str, options: AllowList) -> None:
    """Refuse a cloud metadata host name before it is even resolved, unless it is in ``allow_hosts``."""
    name = normalize_host(host)
    names, _ = _parse_allow_hosts(options.allow_hosts)
    if name in METADATA_HOSTS and name not in names:
        raise ImageFetchError(f"{host} is a cloud metadata host name; {_refused(options)}")


def check_address(ip: IPAddress, host: str, options: AllowList) -> None:
    """Raise :class:`ImageFetchError` unless vlmkit may connect to ``ip`` to fetch from ``host``.

    ``host`` is the URL's host (a name or the address itself). A host name in ``allow_hosts`` allows
    every address it resolves to; an address or network in ``allow_hosts`` allows the addresses in it
    (and IPv6 forms of them), except metadata addresses, which need the exact address listed.
    """
    names, networks = _parse_allow_hosts(options.allow_hosts)
    inner = embedded_ipv4(ip)
    candidates = [ip] if inner is None else [ip, inner]
    what = f"{host} is" if _literal(host) == ip else f"{host} resolves to {ip}, which is"

    if normalize_host(host) in names:
        return
    if any(c in METADATA_ADDRESSES for c in candidates):
        if not any(n.num_addresses == 1 and n.network_address in candidates for n in networks):
            raise ImageFetchError(f"{what} a cloud metadata address; {_refused(options)}")
        return
    if any(c in n for c in candidates for n in networks):
        return
    reason = _category(ip if inner is None else inner)
    if reason is not None and inner is not None:
        reason = f"an IPv6 form of {inner}, {reason}"
    if reason is not None:
        raise ImageFetchError(f"{what} {reason}; {_refused(options)}")
