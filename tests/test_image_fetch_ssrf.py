"""Example-image URLs come from Civitai data, so the fetcher must not become a way into the machine's own network:
loopback, private, link-local (cloud metadata), reserved, multicast, unspecified and IPv4-mapped private addresses
are refused on every hop, before any packet is sent, and the connection goes to the address that was checked (no
second lookup a DNS rebinding could answer differently). Hosts a test or a private mirror serves from are let
through only by the ZOO_FETCH_ALLOW_HOSTS setting.

Refusals are proven without a packet: the fetcher's resolver maps test names to the addresses under test, and its
connect function (which would open the socket) records every call.
"""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from PIL import Image

from config import Settings, SettingsError
from embedding.image_fetch import ImageFetcher
from fake_civitai import PRIVATE_REDIRECT_TARGET, FakeCivitai, Fault

PUBLIC = "93.184.216.34"  # a public address the resolver may answer; the connect spy decides where it really goes


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png()


class Handler(BaseHTTPRequestHandler):
    requests: list[tuple[str, str | None]] = []  # (path, Host header)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        split = urlsplit(self.path)
        Handler.requests.append((split.path, self.headers.get("Host")))
        if split.path == "/good.png":
            body, status, headers = PNG, 200, {"Content-Type": "image/png"}
        elif split.path == "/redirect":
            body, status, headers = b"", 302, {"Location": parse_qs(split.query)["to"][0]}
        else:
            body, status, headers = b"not found", 404, {}
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _serve(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The local image server, at http://127.0.0.1:<port>."""
    for running in _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler)):
        yield f"http://127.0.0.1:{running.server_address[1]}"


@pytest.fixture(autouse=True)
def _forget_requests() -> None:
    Handler.requests.clear()


class Spy:
    """A resolver and a connect function for the fetcher: names resolve as `names` says; connections are recorded,
    then either refused (nothing may be sent) or made to `really` (standing in for a public host)."""

    def __init__(self, names: dict[str, list[str]] | None = None, really: tuple[str, int] | None = None) -> None:
        self.names = names or {}
        self.really = really
        self.lookups: list[str] = []
        self.connects: list[tuple] = []

    def resolve(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.names[host])

    def connect(self, address: tuple, timeout: float | None) -> socket.socket:
        self.connects.append(address)
        if self.really is None:
            raise AssertionError(f"a connection to {address} was attempted")
        return socket.create_connection(self.really, timeout=timeout)


def fetcher_for(tmp_path: Path, spy: Spy | None = None, allow: str = "", **options) -> ImageFetcher:
    """A fetcher as the project builds one: the allow-list comes from the setting."""
    settings = Settings.from_env({"ZOO_HOME": str(tmp_path), "ZOO_FETCH_ALLOW_HOSTS": allow})
    if spy is not None:
        options.update(resolver=spy.resolve, connect=spy.connect)
    return ImageFetcher(tmp_path / "cache", timeout=2, allow_hosts=settings.fetch_allow_hosts, **options)


def refused(result, *needles: str) -> None:
    assert result.image is None and result.error and "refused" in result.error, result
    assert all(needle in result.error for needle in needles), result.error


def test_loopback_and_ipv4_mapped_loopback_are_refused_directly(server: str, tmp_path: Path) -> None:
    port = urlsplit(server).port
    fetcher = fetcher_for(tmp_path)
    for url in (f"http://127.0.0.1:{port}/good.png", f"http://[::ffff:127.0.0.1]:{port}/good.png",
                f"http://[::1]:{port}/good.png", f"http://localhost:{port}/good.png",
                f"http://0.0.0.0:{port}/good.png", f"http://2130706433:{port}/good.png"):
        refused(fetcher.fetch(url))
    assert Handler.requests == []


def test_names_that_resolve_to_unsafe_addresses_are_refused_without_a_packet(tmp_path: Path) -> None:
    unsafe = {
        "metadata.test": ["169.254.169.254"], "intranet.test": ["10.0.0.1"], "six.test": ["::1"],
        "mapped.test": ["::ffff:10.0.0.1"], "mixed.test": [PUBLIC, "192.168.1.1"], "multicast.test": ["224.0.0.1"],
        "unspecified.test": ["0.0.0.0"], "reserved.test": ["240.0.0.1"], "shared.test": ["100.64.0.1"],
        "ula.test": ["fd00::1"], "linklocal6.test": ["fe80::1"], "nat64.test": ["64:ff9b::a00:1"],
        "sixtofour.test": ["2002:a00:1::1"],
    }
    spy = Spy(unsafe)
    fetcher = fetcher_for(tmp_path, spy)
    for host, addresses in unsafe.items():
        refused(fetcher.fetch(f"http://{host}/x.png"), host, addresses[-1])
        refused(fetcher.fetch(f"https://{host}/x.png"), host)
    refused(fetcher.fetch("http://169.254.169.254/latest/meta-data/"), "169.254.169.254")
    assert spy.connects == []  # not one connection was attempted
    assert set(spy.lookups) == set(unsafe)


def test_a_redirect_to_a_private_address_is_refused_on_that_hop(server: str, tmp_path: Path) -> None:
    """The local server is allowed (by the setting); where it redirects is checked again, and refused."""
    port = urlsplit(server).port
    spy = Spy({"metadata.test": ["169.254.169.254"]}, really=("127.0.0.1", port))
    fetcher = fetcher_for(tmp_path, spy, allow=f"127.0.0.1:{port}")
    assert fetcher.fetch(f"{server}/good.png").error is None  # allowed, and connected to what was checked
    assert spy.connects == [("127.0.0.1", port)]
    spy.connects.clear()
    for target in ("http://metadata.test/latest/meta-data/", f"http://[::ffff:127.0.0.1]:{port}/good.png",
                   f"http://127.0.0.1:{port + 1 if port < 65535 else port - 1}/good.png", "http://10.0.0.1/x.png",
                   "http://[::1]/x.png"):
        refused(fetcher.fetch(f"{server}/redirect?to={target}"), "redirect")
    assert spy.connects == [("127.0.0.1", port)] * 5  # only the allowed first hops
    assert [path for path, _ in Handler.requests] == ["/good.png"] + ["/redirect"] * 5


def test_the_fake_civitai_redirect_to_a_private_address_is_refused(tmp_path: Path) -> None:
    with FakeCivitai([], page_size=1) as fake:
        host, port = urlsplit(fake.base_url).hostname, urlsplit(fake.base_url).port
        spy = Spy(really=(host, port))
        fetcher = fetcher_for(tmp_path, spy, allow=f"{host}:{port}")
        fake.faults.append(Fault("redirect-private"))
        result = fetcher.fetch(f"{fake.base_url}/images/1.png")
        assert [r.status for r in fake.requests] == [302]
    refused(result, urlsplit(PRIVATE_REDIRECT_TARGET).hostname)
    assert spy.connects == [(host, port)]


def test_the_connection_goes_to_the_checked_address_with_one_lookup(server: str, tmp_path: Path) -> None:
    """DNS rebinding: the name answers a public address, then loopback. One lookup, and the socket goes to the
    address checked; the request still names the host (Host header)."""
    port = urlsplit(server).port
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    spy = Spy(really=("127.0.0.1", port))
    spy.resolve = lambda host, p: (spy.lookups.append(host), next(answers))[1]  # type: ignore[method-assign]
    fetcher = fetcher_for(tmp_path, spy)
    result = fetcher.fetch(f"http://rebind.test:{port}/good.png")
    assert result.error is None and result.image.size == (32, 16)
    assert spy.lookups == ["rebind.test"]
    assert spy.connects == [(PUBLIC, port)]
    assert Handler.requests == [("/good.png", f"rebind.test:{port}")]


def test_https_to_a_pinned_address_keeps_the_name_for_sni_and_the_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", str(key),
                    "-out", str(cert), "-subj", "/CN=images.test", "-addext", "subjectAltName=DNS:images.test"],
                   check=True, capture_output=True)
    names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda sock, name, ctx: names.append(name)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    for running in _serve(httpd):
        port = running.server_address[1]
        spy = Spy({"images.test": [PUBLIC]}, really=("127.0.0.1", port))
        fetcher = fetcher_for(tmp_path, spy, ca_certs=str(cert))
        result = fetcher.fetch(f"https://images.test:{port}/good.png")
        assert result.error is None, result.error
        refused(fetcher_for(tmp_path, Spy({"images.test": ["10.1.2.3"]})).fetch(f"https://images.test:{port}/x"))
        # A name the certificate does not cover fails verification: the address is pinned, the name is checked.
        other = fetcher_for(tmp_path, Spy({"other.test": [PUBLIC]}, really=("127.0.0.1", port)), ca_certs=str(cert))
        assert "certificate" in (other.fetch(f"https://other.test:{port}/good.png").error or "").lower()
    assert names[0] == "images.test" and spy.connects == [(PUBLIC, port)]


def test_the_allow_list_setting_is_validated_at_start(tmp_path: Path) -> None:
    settings = Settings.from_env({"ZOO_HOME": str(tmp_path),
                                  "ZOO_FETCH_ALLOW_HOSTS": " mirror.local, 127.0.0.1:8080,10.0.0.0/8 ,[::1]:9000,fd00::/8"})
    assert settings.fetch_allow_hosts == ("mirror.local", "127.0.0.1:8080", "10.0.0.0/8", "[::1]:9000", "fd00::/8")
    assert Settings.from_env({"ZOO_HOME": str(tmp_path)}).fetch_allow_hosts == ()
    for bad in ("10.0.0.0/33", "host:port", "a b", "http://mirror.local", "mirror.local:0", "[::1"):
        with pytest.raises(SettingsError, match="ZOO_FETCH_ALLOW_HOSTS"):
            Settings.from_env({"ZOO_HOME": str(tmp_path), "ZOO_FETCH_ALLOW_HOSTS": bad})


def test_an_allowed_network_and_an_allowed_name(server: str, tmp_path: Path) -> None:
    port = urlsplit(server).port
    spy = Spy({"mirror.local": ["10.1.2.3"], "other.local": ["10.1.2.4"]}, really=("127.0.0.1", port))
    by_network = fetcher_for(tmp_path, spy, allow="10.1.2.3/32")
    assert by_network.fetch(f"http://mirror.local:{port}/good.png").error is None
    refused(by_network.fetch(f"http://other.local:{port}/good.png"))
    by_name = fetcher_for(tmp_path / "b", spy, allow="mirror.local")
    assert by_name.fetch(f"http://mirror.local:{port}/good.png").error is None
    assert spy.connects == [("10.1.2.3", port)] * 2


def test_the_dagster_models_resource_passes_the_allow_list_on(server: str, tmp_path: Path) -> None:
    """The refresh's fetcher (orchestration's ModelsResource) honours ZOO_FETCH_ALLOW_HOSTS as a direct one does."""
    from orchestration.models import ModelsResource

    port = urlsplit(server).port
    allowed = Settings.from_env({"ZOO_HOME": str(tmp_path), "ZOO_FETCH_ALLOW_HOSTS": f"127.0.0.1:{port}"})
    assert ModelsResource.from_settings(allowed).image_fetcher().fetch(f"http://127.0.0.1:{port}/good.png").image
    refused(ModelsResource.from_settings(Settings.from_env({"ZOO_HOME": str(tmp_path / "b")})).image_fetcher()
            .fetch(f"http://127.0.0.1:{port}/good.png"))
