"""The safe URL fetcher, against real HTTP servers on 127.0.0.1 started here.

No test sends traffic to any address but 127.0.0.1: every other address (private, link-local,
metadata, IPv6, mapped) is tested through the address check, and a guard fails any test that tries
to connect, or to resolve a name, anywhere else.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import guard_loopback, is_numeric_host, photo_path
from vlmkit.errors import ImageFetchError
from vlmkit.images import fetch as fetch_module
from vlmkit.images.fetch import FetchedImage, FetchOptions, FetchRemedies, afetch_image, check_address, fetch_image
from vlmkit.images.source import aprepare_image, prepare_image

IMAGE = photo_path("grace_hopper.jpg").read_bytes()
ALLOW = FetchOptions(allow_hosts=frozenset({"127.0.0.1"}))


def run_fetch(kind: str, url: str, options: FetchOptions | None = None) -> FetchedImage:
    """Run the sync or the async fetcher (the async one in its own event loop)."""
    if kind == "sync":
        return fetch_image(url, options)
    return anyio.run(afetch_image, url, options)


both = pytest.mark.parametrize("kind", ["sync", "async"])


# --- the guard: loopback only --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    guard_loopback(monkeypatch)


# --- a real server on 127.0.0.1 ------------------------------------------------------------------


def _send(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", **headers: str) -> None:
    h.send_response(status)
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    for name, value in {"Content-Length": str(len(body)), **named}.items():
        h.send_header(name, value)
    h.end_headers()
    h.wfile.write(body)


def _trickle(h: BaseHTTPRequestHandler, data: bytes) -> None:
    for i in range(len(data)):  # one byte every 50 ms, for at most a few seconds
        try:
            h.wfile.write(data[i : i + 1])
            h.wfile.flush()
        except OSError:
            return
        time.sleep(0.05)


def _slow_body(h: BaseHTTPRequestHandler) -> None:
    h.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n")  # the headers at once
    _trickle(h, IMAGE[:200])


def _chunked(h: BaseHTTPRequestHandler) -> None:
    h.send_response(200)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    try:
        for _ in range(64):  # 64 × 16 KiB, no Content-Length
            h.wfile.write(b"4000\r\n" + b"\0" * 0x4000 + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass


def _query(h: BaseHTTPRequestHandler, name: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(h.path).query)[name][0]


ROUTES: dict[str, Callable[[BaseHTTPRequestHandler], None]] = {
    "/grace.jpg": lambda h: _send(h, 200, IMAGE, Content_Type="image/jpeg"),
    "/redirect": lambda h: _send(h, 302, Location=_query(h, "to")),
    "/loop": lambda h: _send(h, 302, Location="/loop"),
    "/declared-big": lambda h: _send(h, 200, b"\xff\xd8", Content_Length="10000000", Connection="close"),
    "/chunked": _chunked,
    "/trickle": _slow_body,
    "/trickle-headers": lambda h: _trickle(h, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"a" * 200),
    "/missing": lambda h: _send(h, 404, b"no such image"),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Host", "")))
        ROUTES[urllib.parse.urlsplit(self.path).path](self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.connections: list[Any] = []
        self.requests: list[tuple[str, str]] = []

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections.append(client_address)
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up on tricklers are expected


@dataclass
class Server:
    httpd: _Server
    port: int = field(init=False)

    def __post_init__(self) -> None:
        self.port = self.httpd.server_address[1]

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.httpd.requests]


@pytest.fixture
def server() -> Iterator[Server]:
    httpd = _Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Server(httpd)
    httpd.shutdown()
    httpd.server_close()


def redirect_to(server: Server, location: str) -> str:
    return server.url("/redirect?to=" + urllib.parse.quote(location, safe=""))


# --- fetching ------------------------------------------------------------------------------------


def test_fetch_from_an_allowed_host(server: Server) -> None:
    got = fetch_image(server.url("/grace.jpg"), ALLOW)
    assert got.data == IMAGE
    assert got.url == server.url("/grace.jpg")
    assert got.content_type == "image/jpeg"
    assert server.httpd.requests == [("/grace.jpg", f"127.0.0.1:{server.port}")]


async def test_afetch_from_an_allowed_host(server: Server) -> None:
    got = await afetch_image(server.url("/grace.jpg"), ALLOW)
    assert got == FetchedImage(IMAGE, server.url("/grace.jpg"), "image/jpeg")


@both
def test_loopback_is_refused_without_the_allow_list_and_never_contacted(kind: str, server: Server) -> None:
    url = server.url("/grace.jpg")
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, url)
    assert err.value.message.startswith(f"refused {url}: 127.0.0.1 is a loopback address;")
    assert err.value.message.endswith(
        "allowed: pass fetch=vlmkit.images.FetchOptions(allow_hosts={...}) (host names, addresses and CIDR networks)"
    )
    assert server.httpd.connections == []


@both
def test_refusals_name_the_remedies_of_whoever_built_the_options(kind: str, server: Server) -> None:
    remedies = FetchRemedies(allow_hosts="say ALLOW", max_bytes="say BYTES", timeout="say T", max_redirects="say R")
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, server.url("/grace.jpg"), FetchOptions(remedies=remedies))
    assert err.value.message.endswith("unless the host is allowed: say ALLOW")
    options = FetchOptions(allow_hosts=ALLOW.allow_hosts, max_bytes=1000, max_redirects=0, remedies=remedies)
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, server.url("/declared-big"), options)
    assert err.value.message.endswith("over the 1000-byte limit; to fetch larger images, say BYTES")
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, redirect_to(server, "/grace.jpg"), options)
    assert err.value.message.endswith("more than 0 redirects; to follow more, say R")
    assert "FetchOptions" not in str(err.value)
    assert options == FetchOptions(allow_hosts=ALLOW.allow_hosts, max_bytes=1000, max_redirects=0)  # words only


@both
def test_relative_redirects_are_followed(kind: str, server: Server) -> None:
    got = run_fetch(kind, redirect_to(server, "/grace.jpg"), ALLOW)
    assert got.data == IMAGE
    assert got.url == server.url("/grace.jpg")
    assert server.paths == ["/redirect?to=%2Fgrace.jpg", "/grace.jpg"]


@both
@pytest.mark.parametrize(
    ("location", "why"),
    [
        ("http://127.0.0.2:{port}/grace.jpg", "127.0.0.2 is a loopback address"),
        ("http://[::1]:{port}/grace.jpg", "::1 is a loopback address"),
        (
            "http://[::ffff:127.0.0.2]:{port}/x",
            "::ffff:127.0.0.2 is an IPv6 form of 127.0.0.2, a loopback address",
        ),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a cloud metadata address"),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata.google.internal is a cloud metadata",
        ),
        ("http://10.1.2.3/x.png", "10.1.2.3 is a private address"),
        ("file:///etc/passwd", "only http:// and https:// URLs are fetched"),
    ],
)
def test_a_redirect_into_a_refused_address_is_refused_before_connecting(
    kind: str, server: Server, location: str, why: str
) -> None:
    start = redirect_to(server, location.format(port=server.port))
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, start, ALLOW)
    assert err.value.message.startswith("refused ")
    assert f"(redirected from {start})" in err.value.message
    assert why in err.value.message
    assert len(server.httpd.connections) == 1  # the redirect itself, nothing more


@both
def test_too_many_redirects(kind: str, server: Server) -> None:
    with pytest.raises(ImageFetchError, match=r"more than 3 redirects; to follow more, pass fetch=vlmkit.images.Fetch"):
        run_fetch(kind, server.url("/loop"), FetchOptions(allow_hosts=ALLOW.allow_hosts, max_redirects=3))
    assert server.paths == ["/loop"] * 4


def test_no_redirects_at_all(server: Server) -> None:
    with pytest.raises(ImageFetchError, match="more than 0 redirects"):
        fetch_image(redirect_to(server, "/grace.jpg"), FetchOptions(allow_hosts=ALLOW.allow_hosts, max_redirects=0))
    assert server.paths == ["/redirect?to=%2Fgrace.jpg"]


@both
def test_a_declared_content_length_over_the_cap_is_refused(kind: str, server: Server) -> None:
    options = FetchOptions(allow_hosts=ALLOW.allow_hosts, max_bytes=1000)
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, server.url("/declared-big"), options)
    assert "the server says it is 10000000 bytes, over the 1000-byte limit" in err.value.message
    assert err.value.message.endswith(
        "; to fetch larger images, pass fetch=vlmkit.images.FetchOptions(max_bytes=...) with a higher limit"
    )


@both
def test_a_chunked_body_growing_past_the_cap_is_cut_off(kind: str, server: Server) -> None:
    options = FetchOptions(allow_hosts=ALLOW.allow_hosts, max_bytes=100_000)
    with pytest.raises(ImageFetchError, match="the body grew past the limit, over the 100000-byte limit"):
        run_fetch(kind, server.url("/chunked"), options)
    # the same body fits under a larger cap, so it was the cap that refused it
    assert len(run_fetch(kind, server.url("/chunked"), ALLOW).data) == 64 * 0x4000


@both
@pytest.mark.parametrize("path", ["/trickle", "/trickle-headers"])
def test_a_slow_trickle_is_stopped_by_the_total_timeout(kind: str, server: Server, path: str) -> None:
    options = FetchOptions(allow_hosts=ALLOW.allow_hosts, timeout=0.5)
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, server.url(path), options)
    assert err.value.message == (
        f"could not fetch {server.url(path)}: no complete answer within the total timeout of 0.5 s, which "
        "covers resolution, redirects and the body; to wait longer, pass fetch=vlmkit.images.FetchOptions(timeout=...) "
        "with more seconds"
    )


@both
def test_an_error_status_is_named(kind: str, server: Server) -> None:
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, server.url("/missing"), ALLOW)
    assert err.value.message == f"could not fetch {server.url('/missing')}: the server answered 404 Not Found"


@both
def test_nothing_listening(kind: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ImageFetchError, match=r"cannot connect to 127.0.0.1 \(127.0.0.1\): ConnectError"):
        run_fetch(kind, f"http://127.0.0.1:{port}/x.png", ALLOW)


@both
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://127.0.0.1/x.png", "only http:// and https:// URLs are fetched"),
        ("file:///etc/passwd", "only http:// and https:// URLs are fetched"),
        ("gopher://127.0.0.1:70/_x", "only http:// and https:// URLs are fetched"),
        ("javascript:alert(1)", "only http:// and https:// URLs are fetched"),
        ("images/x.png", "only http:// and https:// URLs are fetched"),
        ("http:///x.png", "the URL has no host"),
        ("http://user:secret@127.0.0.1/x.png", "URLs with a user name or password are not fetched"),
        ("http://127.0.0.1:99999/x.png", "port 99999 is not a valid TCP port"),
        ("http://\x00/", "it is not a valid URL"),
    ],
)
def test_urls_that_are_not_fetched(kind: str, url: str, why: str) -> None:
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, url, ALLOW)
    assert err.value.message.startswith(f"refused {url!r}: {why}")


# --- the pinned connection: resolve once, connect to what was checked ----------------------------


@dataclass
class FakeDNS:
    """Answers the fetcher's lookups from ``names`` (a name not in it does not exist); logs them."""

    names: dict[str, list[str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)

    def resolve(self, host: str, port: int) -> list[Any]:
        self.calls.append(host)
        if is_numeric_host(host):
            return [ipaddress.ip_address(host)]
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in self.names[host]]


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    dns = FakeDNS()
    monkeypatch.setattr(fetch_module, "_resolve", dns.resolve)
    return dns


@both
def test_the_connection_goes_to_the_checked_address_with_the_original_host(
    kind: str, server: Server, fake_dns: FakeDNS
) -> None:
    fake_dns.names["images.test"] = ["127.0.0.1"]
    got = run_fetch(kind, server.url("/grace.jpg", host="images.test"), ALLOW)
    assert got.data == IMAGE
    assert server.httpd.requests == [("/grace.jpg", f"images.test:{server.port}")]
    assert fake_dns.calls == ["images.test"]  # resolved once; connect used that answer


@both
def test_every_resolved_address_is_checked(kind: str, fake_dns: FakeDNS) -> None:
    fake_dns.names["mixed.test"] = ["93.184.216.34", "10.0.0.7"]
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, "http://mixed.test/x.png")
    assert "mixed.test resolves to 10.0.0.7, which is a private address" in err.value.message


@both
def test_an_unknown_name_is_a_fetch_error(kind: str, fake_dns: FakeDNS) -> None:
    with pytest.raises(ImageFetchError, match=r"could not fetch .*: cannot resolve nowhere.test \("):
        run_fetch(kind, "https://nowhere.test/x.png")


@both
def test_the_total_timeout_covers_name_resolution(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def slow_resolve(host: str, port: int) -> list[Any]:
        release.wait(5)  # a resolver that hangs (getaddrinfo itself cannot be timed out)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch_module, "_resolve", slow_resolve)
    try:
        with pytest.raises(ImageFetchError, match=r"no complete answer within the total timeout of 0\.3 s"):
            run_fetch(kind, "http://slow.test/x.png", FetchOptions(timeout=0.3))
    finally:
        release.set()


def test_a_host_name_on_the_allow_list_allows_its_addresses() -> None:
    with pytest.raises(ImageFetchError, match=r"printer\.lan resolves to 192\.168\.1\.20, which is a private"):
        check_address(ipaddress.ip_address("192.168.1.20"), "printer.lan", FetchOptions())
    check_address(
        ipaddress.ip_address("192.168.1.20"),
        "printer.lan",
        FetchOptions(allow_hosts=frozenset({"printer.lan"})),
    )


# --- https: a test CA, SNI and verification against the host name ---------------------------------


def _test_pki(name: str) -> tuple[bytes, bytes, bytes]:
    """A throwaway CA and a certificate for ``name`` signed by it: (CA PEM, cert PEM, key PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def build(subject: str, key: Any, issuer: str, issuer_key: Any, ca: bool) -> Any:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        )
        if ca:
            usage = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
            builder = builder.add_extension(usage, critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("vlmkit test CA", ca_key, "vlmkit test CA", ca_key, ca=True)
    cert = build(name, key, "vlmkit test CA", ca_key, ca=False)
    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return ca.public_bytes(pem), cert.public_bytes(pem), key_pem


@pytest.fixture
def tls_server(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake_dns: FakeDNS) -> Iterator[Server]:
    """An https server for images.test on 127.0.0.1, trusted through a test CA; redirects to ``server``."""
    ca_pem, cert_pem, key_pem = _test_pki("images.test")
    client = ssl.create_default_context(cadata=ca_pem.decode())
    monkeypatch.setattr(fetch_module, "_ssl_context", lambda: client)
    fake_dns.names["images.test"] = ["127.0.0.1"]
    (tmp_path / "cert.pem").write_bytes(cert_pem + key_pem)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(tmp_path / "cert.pem")
    httpd = _Server()
    httpd.socket = serving.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield Server(httpd)
    httpd.shutdown()
    httpd.server_close()


@both
def test_https_verifies_the_host_name_while_connecting_to_the_checked_address(kind: str, tls_server: Server) -> None:
    url = f"https://images.test:{tls_server.port}/grace.jpg"
    assert run_fetch(kind, url, ALLOW).data == IMAGE
    with pytest.raises(ImageFetchError, match="CERTIFICATE_VERIFY_FAILED"):  # cert is not for 127.0.0.1
        run_fetch(kind, f"https://127.0.0.1:{tls_server.port}/grace.jpg", ALLOW)


@both
def test_an_https_to_http_downgrade_is_refused(kind: str, tls_server: Server, server: Server) -> None:
    start = f"https://images.test:{tls_server.port}/redirect?to=" + urllib.parse.quote(server.url("/grace.jpg"))
    with pytest.raises(ImageFetchError) as err:
        run_fetch(kind, start, ALLOW)
    assert err.value.message == (
        f"refused {server.url('/grace.jpg')} (redirected from {start}): "
        "a redirect from https to plain http (downgrade) is not followed"
    )
    assert server.httpd.connections == []


def test_the_downgrade_decision_needs_no_network() -> None:
    here = fetch_module._target("https://images.example/a/b.png", FetchOptions())
    headers = [(b"Location", b"http://images.example/c.png")]
    with pytest.raises(ImageFetchError, match=r"https to plain http \(downgrade\)"):
        fetch_module._follow(here, 301, headers, 0, FetchOptions())
    same = fetch_module._follow(here, 308, [(b"location", b"../c.png?x=1")], 0, FetchOptions())
    assert same is not None and str(same.url) == "https://images.example/c.png?x=1"


# --- the address policy, with no connection attempted --------------------------------------------

REFUSED = {
    "0.0.0.0": "an unspecified address",
    "::": "an unspecified address",
    "127.0.0.1": "a loopback address",
    "127.255.0.9": "a loopback address",
    "::1": "a loopback address",
    "10.0.0.1": "a private address",
    "172.16.5.4": "a private address",
    "192.168.0.10": "a private address",
    "fc00::1": "a private address",
    "fd12:3456::1": "a private address",
    "169.254.1.1": "a link-local address",
    "fe80::1": "a link-local address",
    "224.0.0.251": "a multicast address",
    "ff02::1": "a multicast address",
    "100.64.0.1": "a shared (carrier-grade NAT) address",
    "100.127.255.254": "a shared (carrier-grade NAT) address",
    "240.0.0.1": "a reserved address",
    "255.255.255.255": "a reserved address",
    "169.254.169.254": "a cloud metadata address",
    "169.254.170.2": "a cloud metadata address",
    "fd00:ec2::254": "a cloud metadata address",
    "100.100.100.200": "a cloud metadata address",
    "::ffff:169.254.169.254": "a cloud metadata address",
    "64:ff9b::a9fe:a9fe": "a cloud metadata address",  # NAT64 of 169.254.169.254
    "::ffff:127.0.0.1": "an IPv6 form of 127.0.0.1, a loopback address",
    "::ffff:10.0.0.1": "an IPv6 form of 10.0.0.1, a private address",
    "::10.0.0.1": "an IPv6 form of 10.0.0.1, a private address",  # IPv4-compatible
    "64:ff9b::7f00:1": "an IPv6 form of 127.0.0.1, a loopback address",  # NAT64
    "64:ff9b::c0a8:1": "an IPv6 form of 192.168.0.1, a private address",
    "2002:7f00:1::": "an IPv6 form of 127.0.0.1, a loopback address",  # 6to4
    "2001:db8::1": "a private address",  # documentation
}
ALLOWED = [
    "8.8.8.8",
    "93.184.216.34",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize(("address", "why"), REFUSED.items())
def test_check_address_refuses(address: str, why: str) -> None:
    ip = ipaddress.ip_address(address)
    with pytest.raises(ImageFetchError) as err:
        check_address(ip, address, FetchOptions())
    assert err.value.message.startswith(f"{address} is {why}; vlmkit does not fetch loopback, private, link-local")
    with pytest.raises(ImageFetchError) as err:
        check_address(ip, "images.test", FetchOptions())
    assert err.value.message.startswith(f"images.test resolves to {ip}, which is {why}; vlmkit does not fetch")


@pytest.mark.parametrize("address", ALLOWED)
def test_check_address_allows_public_addresses(address: str) -> None:
    check_address(ipaddress.ip_address(address), "images.example", FetchOptions())


@pytest.mark.parametrize(
    ("allow", "address", "host"),
    [
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "::ffff:127.0.0.1", "::ffff:127.0.0.1"),  # the IPv6 form of an allowed address
        ("10.0.0.0/8", "10.20.30.40", "nas.lan"),
        ("fd00::/8", "fd00::5", "nas.lan"),
        ("[::1]", "::1", "::1"),
        ("NAS.LAN.", "10.20.30.40", "nas.lan"),
        ("169.254.169.254", "169.254.169.254", "169.254.169.254"),  # metadata: the exact address
        ("metadata.google.internal", "169.254.169.254", "metadata.google.internal"),
    ],
)
def test_the_allow_list(allow: str, address: str, host: str) -> None:
    options = FetchOptions(allow_hosts=frozenset({allow}))
    check_address(ipaddress.ip_address(address), host, options)


@pytest.mark.parametrize(
    ("allow", "address", "why"),
    [
        ("127.0.0.1", "127.0.0.2", "a loopback address"),
        ("10.0.0.0/8", "192.168.1.1", "a private address"),
        ("169.254.0.0/16", "169.254.169.254", "a cloud metadata address"),  # a network is not enough
        ("0.0.0.0/0", "100.100.100.200", "a cloud metadata address"),
        ("other.lan", "10.0.0.1", "a private address"),
    ],
)
def test_what_the_allow_list_does_not_allow(allow: str, address: str, why: str) -> None:
    options = FetchOptions(allow_hosts=frozenset({allow}))
    with pytest.raises(ImageFetchError) as err:
        check_address(ipaddress.ip_address(address), address, options)
    assert err.value.message.startswith(f"{address} is {why};")


@both
@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA.goog.", "metadata"])
def test_metadata_names_are_refused_before_resolving(kind: str, host: str, fake_dns: FakeDNS) -> None:
    with pytest.raises(ImageFetchError, match="is a cloud metadata host name; vlmkit does not fetch"):
        run_fetch(kind, f"http://{host}/computeMetadata/v1/", ALLOW)
    assert fake_dns.calls == []


def test_options_are_checked() -> None:
    with pytest.raises(TypeError, match="not a string"):
        FetchOptions(allow_hosts="127.0.0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timeout > 0"):
        FetchOptions(timeout=0)
    assert FetchOptions(allow_hosts={"a"}).allow_hosts == frozenset({"a"})  # type: ignore[arg-type]
    assert FetchOptions().user_agent.startswith("vlmkit/")


# --- arbitrary strings ---------------------------------------------------------------------------

urls = st.one_of(
    st.text(max_size=80),
    st.builds(
        "".join,
        st.tuples(
            st.sampled_from(["http://", "https://", "HTTP://", "http:", "https:///", "http://[", "//"]),
            st.text(max_size=60),
        ),
    ),
    st.from_regex(r"\Ahttps?://[a-z0-9.:\[\]%@-]{0,30}(/[^\s]{0,20})?\Z"),
)


@settings(max_examples=300, deadline=None)
@given(url=urls)
def test_arbitrary_strings_only_ever_give_an_image_fetch_error(url: str) -> None:
    """Every name and address resolves to 127.0.0.1 here, so nothing is ever contacted."""

    def resolve(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1")]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fetch_module, "_resolve", resolve)
        with pytest.raises(ImageFetchError):
            fetch_image(url)


# --- prepare_image over URLs ---------------------------------------------------------------------


def test_prepare_image_fetches_a_url_and_sniffs_the_bytes(server: Server) -> None:
    handle = prepare_image(server.url("/grace.jpg"), fetch=ALLOW)
    assert (handle.mime_type, handle.width, handle.height) == ("image/jpeg", 512, 600)
    assert handle.name == "grace.jpg" and handle.source == server.url("/grace.jpg")
    assert handle.identifier == prepare_image(IMAGE).identifier


async def test_aprepare_image_fetches_off_the_loop(server: Server) -> None:
    handle = await aprepare_image(server.url("/grace.jpg"), fetch=ALLOW)
    assert handle.identifier == prepare_image(IMAGE).identifier


def test_prepare_image_refuses_loopback_by_default(server: Server) -> None:
    with pytest.raises(ImageFetchError, match="is a loopback address"):
        prepare_image(server.url("/grace.jpg"))
    assert server.httpd.connections == []
