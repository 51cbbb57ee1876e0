"""The bytes of an image a chat request names, fetched only where the operator allowed.

A server that fetches URLs for its clients lets them reach whatever the server
can reach: cloud metadata at 169.254.169.254, admin ports on localhost, the
internal network.  vLLM shipped exactly that (GHSA-3f6c-7fw2-ppm4): it checked
the first URL, and its HTTP client then followed a redirect to an internal
address.  So here:

- data: URLs are always accepted (the client sends the bytes; nothing is fetched);
- http(s) URLs only when the operator lists domains (--allowed-media-domains),
  and only to public addresses unless a network is opted in
  (--allowed-media-networks 10.0.0.0/8, for an internal image store);
- redirects are followed by this code, never by the HTTP client, up to a cap,
  and every hop is checked again: scheme, domain, every address its host
  resolves to;
- the connection goes to the very address that was checked (the Host header
  and the TLS name stay the URL's host), so a DNS answer that changes between
  check and connect (rebinding) cannot slip past the check;
- the download stops as soon as it passes the byte cap, and the whole fetch
  has a time limit;
- local files only under one directory (--allowed-local-media-path), after
  resolving symlinks and "..".
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from llava.extras import missing_extra
from llava.serve.images import MAX_BYTES, decode_base64

try:
    import httpx
except ImportError as exc:  # the `serve` extra
    raise missing_extra("serve", exc, "fetching images by URL") from exc

REDIRECT_STATUSES = {301, 302, 303, 307, 308}
_DATA_URL = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*):")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Well-known NAT64 prefix (RFC 6052): its last 32 bits are an IPv4 address reached through a gateway.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Checked in this order, so 127.0.0.2 is called "loopback", not "private".
_KINDS = (("loopback", "is_loopback"), ("link-local", "is_link_local"), ("multicast", "is_multicast"),
          ("unspecified", "is_unspecified"), ("reserved", "is_reserved"), ("private", "is_private"))
HINT_NETWORKS = "an operator can allow a private network with --allowed-media-networks CIDR"


class MediaError(ValueError):
    """An image source that is refused or cannot be fetched; the message says which and why."""

    def __init__(self, message: str, code: str = "invalid_image_url"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class MediaPolicy:
    """What the operator allowed.  The defaults allow data: URLs only."""

    allowed_domains: frozenset[str] = frozenset()
    allowed_networks: tuple = ()  # ipaddress networks, opted in even though private / loopback
    local_root: Path | None = None  # resolved
    max_bytes: int = MAX_BYTES
    fetch_timeout: float = 10.0
    max_redirects: int = 3

    @classmethod
    def from_flags(cls, domains=(), networks=(), local_root=None, **caps) -> MediaPolicy:
        """The policy from command-line values; a bad value raises ValueError naming its flag."""
        names = set()
        for domain in domains:
            if "/" in domain or not domain.strip(". "):
                raise ValueError(f"--allowed-media-domains takes host names such as images.example.com, "
                                 f"not URLs: got {domain!r}")
            names.add(normalize_host(domain))
        nets = []
        for net in networks:
            try:
                nets.append(ipaddress.ip_network(net, strict=False))
            except ValueError as exc:
                raise ValueError(f"--allowed-media-networks: {net!r} is not a network such as 10.0.0.0/8 "
                                 f"({exc})") from exc
        root = None
        if local_root is not None:
            root = Path(local_root).expanduser().resolve()
            if not root.is_dir():
                raise ValueError(f"--allowed-local-media-path: {local_root} is not a directory")
        return cls(frozenset(names), tuple(nets), root, **caps)


def normalize_host(host: str) -> str:
    """Lower case, no trailing dot, IPv6 without brackets and in its short form: comparable."""
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _embedded_ipv4(ip) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), which is where it really goes."""
    if ip.version != 6:
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(address: str, allowed_networks=()) -> str | None:
    """Why `address` must not be fetched from ("a loopback address"), or None when it may."""
    ip = ipaddress.ip_address(address)
    target = _embedded_ipv4(ip) or ip  # judged by where the packets really go
    via = "" if target is ip else f" (it carries the IPv4 address {target})"
    if any(target.version == net.version and target in net for net in allowed_networks):
        return None  # the operator opted this network in
    for kind, attr in _KINDS:
        if getattr(target, attr):
            return f"a {kind} address{via}"
    if not target.is_global:
        return f"not a public address{via}"
    return None


async def image_bytes(source: str, policy: MediaPolicy) -> tuple[bytes, str]:
    """(bytes, a name for messages) of the image `source` names: data: URL, http(s) URL, file:// URL or path."""
    source = source.strip()
    scheme = _SCHEME.match(source)
    scheme = scheme.group(1).lower() if scheme else ""
    if scheme == "data":
        return data_url_bytes(source, policy.max_bytes), "data URL"
    _refuse_control_characters(source, source)
    if scheme in ("http", "https"):
        return await fetch_url(source, policy), source
    if scheme in ("", "file"):
        path = local_path(source, policy)
        return await asyncio.to_thread(_read_local, path, source, policy.max_bytes), source
    raise MediaError(f"{_short(source)}: {scheme}: URLs are not supported; send a data: URL, an http(s) URL "
                     "or a file path", "unsupported_image_url")


def _refuse_control_characters(text: str, source: str) -> None:
    """A NUL, newline or other control character has no place in a URL or a file name; the OS and the HTTP
    client would each fail on it in their own way (a NUL ends a C string: 'a.png\\0.txt')."""
    found = _CONTROL.search(text)
    if found:
        raise MediaError(f"{_short(ascii(source))}: a control character ({found.group()!r}) at character "
                         f"{found.start()}; URLs and file names cannot contain one")


def data_url_bytes(url: str, max_bytes: int) -> bytes:
    if not _DATA_URL.match(url):
        raise MediaError(f"{_short(url)}: only base64 image data URLs (data:image/png;base64,...) are accepted")
    payload = url.split(",", 1)[1]
    if len(payload) * 3 // 4 > max_bytes + 3:  # checked before decoding, so a huge payload is not copied
        raise MediaError(f"data URL: more than the {max_bytes:,} bytes allowed for an image (--max-image-bytes)",
                         "image_too_large")
    try:
        data = decode_base64(payload, "data URL")
    except ValueError as exc:
        raise MediaError(str(exc)) from exc
    if len(data) > max_bytes:
        raise MediaError(f"data URL: {len(data):,} bytes, more than the {max_bytes:,} allowed (--max-image-bytes)",
                         "image_too_large")
    return data


# --- local files -------------------------------------------------------------------------------------


def local_path(source: str, policy: MediaPolicy) -> Path:
    """The file a file:// URL or path names, if it lies under the allowed directory.

    Relative paths are relative to that directory.  Containment is checked on the
    resolved path (symlinks and ".." followed) before anything about the file is
    said, so the answer does not reveal which files exist outside it.
    """
    root = policy.local_root
    if root is None:
        raise MediaError(f"{_short(source)}: local files are not allowed on this server (the operator can "
                         "allow a directory with --allowed-local-media-path DIR); send the image as a data: URL",
                         "local_files_disabled")
    raw = source
    if source.lower().startswith("file:"):
        parts = urlsplit(source)
        if parts.netloc not in ("", "localhost"):
            raise MediaError(f"{_short(source)}: a file:// URL must name a local file (file:///path)")
        raw = unquote(parts.path)
        _refuse_control_characters(raw, source)  # %00 and the like, now decoded
    try:
        path = Path(raw).expanduser()
        resolved = (path if path.is_absolute() else root / path).resolve()
        if not resolved.is_relative_to(root):
            raise MediaError(f"{_short(source)}: outside the allowed directory {root} (after resolving symlinks "
                             "and '..'); refused", "local_path_outside_allowed_dir")
        if not resolved.is_file():
            raise MediaError(f"{_short(source)}: no such file under {root}")
    except OSError as exc:  # a name too long, a component that is a file, ...
        raise MediaError(f"{_short(source)}: not a readable path ({exc.strerror or exc})") from exc
    return resolved


def _read_local(path: Path, name: str, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:  # unreadable (permissions), or a directory that appeared since the check
        raise MediaError(f"{_short(name)}: cannot read ({exc.strerror or exc})") from exc
    if len(data) > max_bytes:
        raise MediaError(f"{_short(name)}: larger than the {max_bytes:,} bytes allowed (--max-image-bytes)",
                         "image_too_large")
    return data


# --- remote URLs -------------------------------------------------------------------------------------


async def fetch_url(url: str, policy: MediaPolicy) -> bytes:
    """The body of `url` (status 200), every hop checked, within the byte and time caps."""
    if not policy.allowed_domains:
        raise MediaError(f"{_short(url)}: image URLs are disabled on this server (the operator can allow domains "
                         "with --allowed-media-domains); send the image as a data: URL", "remote_media_disabled")
    try:
        async with asyncio.timeout(policy.fetch_timeout):
            return await _fetch(url, policy)
    except TimeoutError:
        raise MediaError(f"{_short(url)}: no complete answer within {policy.fetch_timeout:g} s "
                         "(--media-fetch-timeout)", "image_fetch_timeout") from None


async def _fetch(url: str, policy: MediaPolicy) -> bytes:
    first = url
    # trust_env=False: a proxy from the environment would resolve and connect by itself, past the checks.
    async with httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=policy.fetch_timeout) as client:
        for hop in range(policy.max_redirects + 1):
            response = await _send(client, await _checked_requests(client, url, hop, policy), url)
            try:
                if response.status_code in REDIRECT_STATUSES:
                    location = response.headers.get("location")
                    if not location:
                        raise MediaError(f"{_short(url)}: HTTP {response.status_code} redirect without a Location",
                                         "image_fetch_failed")
                    url = urljoin(url, location)
                    continue
                if response.status_code != 200:
                    raise MediaError(f"{_short(url)}: the server answered HTTP {response.status_code}",
                                     "image_fetch_failed")
                return await _read_capped(response, url, policy.max_bytes)
            finally:
                await response.aclose()
    raise MediaError(f"{_short(first)}: more than {policy.max_redirects} redirects (--max-redirects)",
                     "too_many_redirects")


async def _send(client: httpx.AsyncClient, requests: list[httpx.Request], url: str) -> httpx.Response:
    """The response from the first checked address that accepts a connection (as for ::1 vs 127.0.0.1)."""
    for i, request in enumerate(requests):
        try:
            return await client.send(request, stream=True)
        except httpx.ConnectError as exc:
            if i + 1 < len(requests):
                continue
            error = exc
        except httpx.HTTPError as exc:
            error = exc
        raise MediaError(f"{_short(url)}: cannot fetch ({type(error).__name__}: {error})",
                         "image_fetch_failed") from error
    raise AssertionError("no addresses")  # _checked_requests never returns an empty list


async def _checked_requests(client: httpx.AsyncClient, url: str, hop: int,
                            policy: MediaPolicy) -> list[httpx.Request]:
    """Requests for `url`, one per address its host resolves to, each addressed to that IP (so nothing
    resolves the name again); refuses the URL when any check fails for any of its addresses."""
    where = _short(url) if hop == 0 else f"redirect {hop} to {_short(url)}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise MediaError(f"{where}: not a valid URL ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise MediaError(f"{where}: the {scheme or 'missing'} scheme is not allowed; only http and https",
                         "image_url_refused")
    if not parts.hostname:
        raise MediaError(f"{where}: no host name")
    host = normalize_host(parts.hostname)
    if host not in policy.allowed_domains:
        raise MediaError(f"{where}: {host} is not in --allowed-media-domains", "image_url_refused")
    addresses = await _resolve(host, port or (443 if scheme == "https" else 80), where)
    for address in addresses:
        reason = address_refusal(address, policy.allowed_networks)
        if reason:
            raise MediaError(f"{where}: {host} resolves to {address}, {reason}; refused ({HINT_NETWORKS})",
                             "image_url_refused")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Host": (f"[{host}]" if ":" in host else host) + (f":{port}" if port else ""),
               "Accept": "image/*", "Accept-Encoding": "identity"}
    # The TLS name (SNI and certificate check) stays the URL's host, though we connect to its address.
    extensions = {"sni_hostname": host} if scheme == "https" and not _is_ip(host) else {}
    try:
        return [client.build_request("GET", httpx.URL(scheme=scheme, host=address.split("%")[0], port=port,
                                                      raw_path=path.encode()), headers=headers,
                                     extensions=extensions)
                for address in addresses]
    except (httpx.InvalidURL, ValueError) as exc:
        raise MediaError(f"{where}: not a valid URL ({exc})") from exc


async def _resolve(host: str, port: int, where: str) -> list[str]:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise MediaError(f"{where}: cannot resolve {host} ({exc})", "image_fetch_failed") from exc
    return list(dict.fromkeys(info[4][0] for info in infos))


async def _read_capped(response: httpx.Response, url: str, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise MediaError(f"{_short(url)}: {int(declared):,} bytes, more than the {max_bytes:,} allowed "
                         "(--max-image-bytes)", "image_too_large")
    data = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > max_bytes:  # stop reading now: the body may never end
                raise MediaError(f"{_short(url)}: more than the {max_bytes:,} bytes allowed (--max-image-bytes); "
                                 "download stopped", "image_too_large")
    except httpx.HTTPError as exc:
        raise MediaError(f"{_short(url)}: download failed ({type(exc).__name__}: {exc})",
                         "image_fetch_failed") from exc
    return bytes(data)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _short(text: str, limit: int = 120) -> str:
    """A URL as messages quote it: data URLs and other long ones cut, so an error is not megabytes long."""
    return text if len(text) <= limit else text[:limit] + "..."
