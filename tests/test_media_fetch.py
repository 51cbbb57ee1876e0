"""llava/serve/media_fetch.py: the address / domain / path policy, with real DNS and real local servers
(testkit/image_host.py)."""

from __future__ import annotations

import asyncio
import base64
import ipaddress

import pytest

from llava.serve.media_fetch import MediaError, MediaPolicy, address_refusal, image_bytes, local_path, normalize_host

from testkit.image_host import ImageHost, serve


def echo_host(h, host):
    serve(h.headers.get("Host", "").encode(), "text/plain")(h, host)


@pytest.fixture
def loopback_host():
    host = ImageHost({"/echo": echo_host, "/img": serve(b"not really a png")})
    yield host
    host.close()


def fetch(source: str, policy: MediaPolicy) -> bytes:
    return asyncio.run(image_bytes(source, policy))[0]


@pytest.mark.parametrize("address, kind", [
    ("127.0.0.1", "loopback"), ("127.0.0.2", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "not a public address"),
    # IPv6 forms that carry an IPv4 address go where that address goes.
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:169.254.169.254", "link-local"), ("::ffff:10.0.0.1", "private"),
    ("2002:7f00:1::", "loopback"), ("64:ff9b::a9fe:a9fe", "link-local"),
])
def test_non_public_addresses_are_refused(address, kind):
    reason = address_refusal(address)
    assert reason is not None and kind in reason, (address, reason)


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2001:4860:4860::8888", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert address_refusal(address) is None


def test_networks_opt_in_covers_exactly_the_networks_named():
    nets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]
    assert address_refusal("10.1.2.3", nets) is None
    assert address_refusal("::ffff:10.1.2.3", nets) is None  # the mapped form is the same host
    assert address_refusal("127.0.0.1", nets) is None
    assert "loopback" in address_refusal("127.0.0.2", nets)
    assert "private" in address_refusal("192.168.0.1", nets)


def test_flags_are_checked_and_hosts_normalized(tmp_path):
    policy = MediaPolicy.from_flags(["Images.Example.COM.", "[::1]"], ["10.0.0.0/8"], tmp_path)
    assert policy.allowed_domains == {"images.example.com", "::1"}
    assert normalize_host("[0:0::1]") == "::1"
    with pytest.raises(ValueError, match="--allowed-media-domains takes host names"):
        MediaPolicy.from_flags(["https://images.example.com/"])
    with pytest.raises(ValueError, match="--allowed-media-networks: 'ten' is not a network"):
        MediaPolicy.from_flags(networks=["ten"])
    with pytest.raises(ValueError, match="--allowed-local-media-path: .* is not a directory"):
        MediaPolicy.from_flags(local_root=tmp_path / "missing")


def test_local_paths_stay_under_the_allowed_directory(tmp_path):
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"s")
    (root / "link.png").symlink_to(tmp_path / "secret.png")
    (root / "inner-link.png").symlink_to(root / "sub" / "a.png")
    policy = MediaPolicy.from_flags(local_root=root)
    inside = (root / "sub" / "a.png").resolve()
    assert local_path("sub/a.png", policy) == inside
    assert local_path(f"file://{root}/sub/../sub/a.png", policy) == inside
    assert local_path(str(root / "inner-link.png"), policy) == inside  # a symlink that stays inside is fine
    for escaping in (f"{root}/../secret.png", f"file://{root}/../secret.png", "../secret.png",
                     str(root / "link.png"), f"{root}/../no-such-file.png", "/etc/passwd"):
        with pytest.raises(MediaError, match="outside the allowed directory"):
            local_path(escaping, policy)
    with pytest.raises(MediaError, match="no such file under"):
        local_path("sub/missing.png", policy)
    with pytest.raises(MediaError, match="must name a local file"):
        local_path("file://otherhost/etc/passwd", policy)
    with pytest.raises(MediaError, match="local files are not allowed on this server"):
        local_path("sub/a.png", MediaPolicy())


def test_data_urls_and_schemes():
    png = base64.b64encode(b"\x89PNG fake").decode()
    assert fetch(f"data:image/png;base64,{png}", MediaPolicy()) == b"\x89PNG fake"
    with pytest.raises(MediaError, match="only base64 image data URLs"):
        fetch("data:text/html;base64,PGh0bWw+", MediaPolicy())
    with pytest.raises(MediaError, match="not valid base64"):
        fetch("data:image/png;base64,@@@@", MediaPolicy())
    with pytest.raises(MediaError, match="more than the 4 bytes allowed"):
        fetch(f"data:image/png;base64,{png}", MediaPolicy(max_bytes=4))
    with pytest.raises(MediaError, match="ftp: URLs are not supported"):
        fetch("ftp://example.com/a.png", MediaPolicy(allowed_domains=frozenset({"example.com"})))


def test_a_host_name_that_resolves_to_loopback_is_refused_before_connecting(loopback_host):
    """'localhost' is allowlisted, but it resolves (real DNS / hosts file) to a loopback address."""
    policy = MediaPolicy.from_flags(["localhost"])
    with pytest.raises(MediaError, match=r"localhost resolves to (127\.0\.0\.1|::1), a loopback address"):
        fetch(f"http://localhost:{loopback_host.port}/img", policy)
    assert loopback_host.hits == []


def test_the_connection_goes_to_the_checked_address_with_the_hosts_name(loopback_host):
    """Connecting to the resolved IP (no second lookup) keeps the URL's host in the Host header."""
    policy = MediaPolicy.from_flags(["localhost"], ["127.0.0.0/8", "::1/128"])
    assert fetch(f"http://localhost:{loopback_host.port}/echo", policy) == f"localhost:{loopback_host.port}".encode()
    assert loopback_host.paths() == ["/echo"]
