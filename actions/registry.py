"""Is an image still pullable? A HEAD of its manifest at the registry, as a pull starts.

A rollback to an image the registry has since deleted (a retention policy, a
cleaned-up tag) fails halfway: the pods go to ImagePullBackOff or the swap
cannot pull. So before approval the verdict asks the registry itself, the way
a pull's first request does (distribution's spec/api.md, "Existing Manifests":
`HEAD /v2/<name>/manifests/<reference>` answers 200 or 404), with the Accept
header of every manifest type a pull takes (Docker schema 2, OCI manifest and
index, manifest lists).

Authentication follows the registry's challenge (distribution's
spec/auth/token.md): a 401 carries `WWW-Authenticate: Bearer realm=…,service=…,
scope=…`, the client fetches a token from the realm (basic credentials when it
has them, anonymously otherwise) and repeats the request with
`Authorization: Bearer <token>`; a `Basic` challenge is answered with the
credentials directly. The credentials come from a Kubernetes pull secret
(`.dockerconfigjson`) or the bot's Docker config, as an `auths` entry.

Registries on a loopback address are spoken to over plain HTTP, as dockerd
does by default (its insecure-registries include 127.0.0.0/8); all others over
HTTPS. A registry that cannot be reached proves nothing either way: the
answer says "unknown", which the verdict counts as risky.
"""

from __future__ import annotations

import base64
import enum
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import httpx

TIMEOUT = 5.0
ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
DOCKER_HUB = "registry-1.docker.io"
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


class Pullable(enum.StrEnum):
    """What the registry said about an image."""

    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Reference:
    """An image reference split as a pull splits it."""

    registry: str
    repository: str
    reference: str
    """A tag or a digest."""

    @classmethod
    def parse(cls, image: str) -> Reference:
        """Split `[registry/]name[:tag][@digest]`; docker.io names get `library/`."""
        name, _, digest = image.partition("@")
        first, sep, rest = name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, path = first, rest
        else:
            registry, path = "docker.io", name
        repository, tag = path, "latest"
        head, colon, tail = path.rpartition(":")
        if colon and "/" not in tail:
            repository, tag = head, tail
        if registry == "docker.io" and "/" not in repository:
            repository = f"library/{repository}"
        return cls(registry, repository, digest or tag)

    @property
    def base_url(self) -> str:
        """Where the registry's API is: HTTP on loopback, HTTPS elsewhere."""
        host = DOCKER_HUB if self.registry == "docker.io" else self.registry
        return f"{'http' if _loopback(host) else 'https'}://{host}"


def _loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def credentials(auths: dict[str, Any], registry: str) -> tuple[str, str] | None:
    """Find (user, password) for `registry` in a Docker config's `auths`."""
    keys = {registry}
    if registry == "docker.io":
        keys |= {"index.docker.io", DOCKER_HUB, "index.docker.io/v1"}
    for key, entry in auths.items():
        bare = key.removeprefix("https://").removeprefix("http://").rstrip("/")
        if bare in keys or bare.removesuffix("/v1") in keys:
            if not isinstance(entry, dict):
                continue
            if entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return user, password
            return str(entry.get("username", "")), str(entry.get("password", ""))
    return None


@dataclass(frozen=True)
class Answer:
    """The registry's answer: pullable or not or unknown, and why in words."""

    pullable: Pullable
    detail: str
    digest: str = ""


def _token(
    client: httpx.Client, challenge: str, auth: tuple[str, str] | None, ref: Reference
) -> str | None:
    params = dict(_CHALLENGE.findall(challenge))
    realm = params.pop("realm", "")
    if not realm:
        return None
    params.setdefault("scope", f"repository:{ref.repository}:pull")
    answer = client.get(realm, params=params, auth=auth)
    if answer.status_code != 200:
        return None
    body = answer.json()
    token = body.get("token") or body.get("access_token")
    return str(token) if token else None


def check_manifest(image: str, *, auth: tuple[str, str] | None = None) -> Answer:
    """HEAD the image's manifest at its registry, answering its auth challenge."""
    ref = Reference.parse(image)
    url = f"{ref.base_url}/v2/{ref.repository}/manifests/{ref.reference}"
    headers = {"Accept": ACCEPT}
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            answer = client.head(url, headers=headers)
            challenge = answer.headers.get("www-authenticate", "")
            if answer.status_code == 401 and challenge.lower().startswith("bearer"):
                token = _token(client, challenge, auth, ref)
                if token is not None:
                    headers["Authorization"] = f"Bearer {token}"
                    answer = client.head(url, headers=headers)
            elif answer.status_code == 401 and auth is not None:
                answer = client.head(url, headers=headers, auth=auth)
    except (httpx.HTTPError, OSError) as exc:
        return Answer(Pullable.UNKNOWN, f"cannot reach {ref.registry}: {exc or type(exc).__name__}")
    status = answer.status_code
    if status == 200:
        digest = answer.headers.get("docker-content-digest", "")
        return Answer(Pullable.YES, f"{image} is in {ref.registry}", digest)
    if status == 404:
        return Answer(Pullable.NO, f"{image} is not in {ref.registry} (manifest unknown)")
    if status in (401, 403):
        how = "with the pull secret" if auth else "anonymously"
        return Answer(Pullable.NO, f"{ref.registry} refuses {image} {how} (HTTP {status})")
    return Answer(Pullable.UNKNOWN, f"{ref.registry} answered HTTP {status} for {image}")


PLATFORM = ("linux", "amd64")
LIST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


class Unreadable(Exception):
    """The registry could not say: the message says why, in words."""


def image_labels(image: str, *, auth: tuple[str, str] | None = None) -> dict[str, str]:
    """The labels in an image's config, read from its registry as a pull reads them.

    A pull GETs the manifest (an index or list first picks this platform's manifest), then
    the config blob the manifest names (distribution's spec/api.md, "Pulling An Image";
    the OCI image spec's config.md: `config.Labels`).
    """
    ref = Reference.parse(image)
    base = f"{ref.base_url}/v2/{ref.repository}"
    try:
        with httpx.Client(timeout=TIMEOUT) as client:
            headers = {"Accept": ACCEPT}
            manifest = _get(client, f"{base}/manifests/{ref.reference}", headers, auth, ref)
            if manifest.headers.get("content-type", "").split(";")[0] in LIST_TYPES:
                chosen = _platform_manifest(manifest.json())
                manifest = _get(client, f"{base}/manifests/{chosen}", headers, auth, ref)
            digest = manifest.json()["config"]["digest"]
            config = _get(client, f"{base}/blobs/{digest}", headers, auth, ref).json()
    except (httpx.HTTPError, OSError, ValueError, KeyError) as exc:
        raise Unreadable(f"cannot read {image}'s labels from {ref.registry}: {exc}") from None
    labels = (config.get("config") or {}).get("Labels") or {}
    return {str(k): str(v) for k, v in labels.items()}


def _get(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    auth: tuple[str, str] | None,
    ref: Reference,
) -> httpx.Response:
    """GET, answering a Bearer or Basic challenge once; raise on anything but 200."""
    answer = client.get(url, headers=headers, follow_redirects=True)
    challenge = answer.headers.get("www-authenticate", "")
    if answer.status_code == 401 and challenge.lower().startswith("bearer"):
        token = _token(client, challenge, auth, ref)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
            answer = client.get(url, headers=headers, follow_redirects=True)
    elif answer.status_code == 401 and auth is not None:
        answer = client.get(url, headers=headers, auth=auth, follow_redirects=True)
    if answer.status_code != 200:
        raise Unreadable(f"{ref.registry} answered HTTP {answer.status_code} for {url}")
    return answer


def _platform_manifest(index: dict[str, Any]) -> str:
    """The digest of this platform's manifest in an index, else the first one's."""
    manifests = index.get("manifests") or []
    for entry in manifests:
        platform = entry.get("platform") or {}
        if (platform.get("os"), platform.get("architecture")) == PLATFORM:
            return str(entry["digest"])
    if not manifests:
        raise Unreadable("the image index lists no manifest")
    return str(manifests[0]["digest"])
