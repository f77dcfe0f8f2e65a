"""What Git says production should run, read the way the reconciler renders it.

The hold after a rollback ends only when Git names what runs, so "what Git names" must be
what Argo CD or Flux would apply, not what a text search finds:

- a folder with a kustomization (`kustomization.yaml`, `kustomization.yml`,
  `Kustomization`) is rendered by the real `kubectl kustomize`, as Argo CD's repo-server
  (`kustomize build`) and Flux's kustomize-controller (the kustomize API) render it, and
  the images are those of the rendered pod templates;
- any other file or folder is read as it stands: a plain manifest's `image:` strings, a
  Helm values file's `image:` string or `{registry, repository, tag, digest}` mapping
  (what the chart's template joins into the container's image), a kustomization
  `images:` entry when the folder is not a kustomization root.

The same reading serves the question "does this commit name the bad version again?".
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from actions.base import PermanentError, TemporaryError
from actions.git.edit import ImageRef
from actions.git.repo import yaml_files

KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KUSTOMIZE_TIMEOUT = 60.0


def kustomization_root(root: Path, under: str) -> Path | None:
    """The folder `kubectl kustomize` renders for `under`, when it is (in) a kustomization."""
    start = root / under
    folder = start if start.is_dir() else start.parent
    return folder if any((folder / name).is_file() for name in KUSTOMIZATIONS) else None


def kustomize(folder: Path) -> str:
    """The output of `kubectl kustomize folder`; its error, said, when it fails."""
    try:
        done = subprocess.run(
            ["kubectl", "kustomize", str(folder)],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        said = f"kubectl kustomize gave no answer in {KUSTOMIZE_TIMEOUT:.0f} s"
        raise TemporaryError(said) from None
    except FileNotFoundError:
        said = "kubectl is not installed: kustomize sources cannot be rendered"
        raise PermanentError(said) from None
    if done.returncode != 0:
        said = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        raise PermanentError(f"kubectl kustomize {folder.name}: {said}")
    return done.stdout


def _pod_images(document: Any) -> Iterator[str]:
    """The container images of a rendered object's pod template (a CronJob's job's, a Pod's)."""
    if not isinstance(document, dict):
        return
    spec = document.get("spec")
    job = spec.get("jobTemplate") if isinstance(spec, dict) else None
    if isinstance(job, dict):
        spec = job.get("spec")
    template = spec.get("template") if isinstance(spec, dict) else None
    pod = template.get("spec") if isinstance(template, dict) else spec
    if not isinstance(pod, dict):
        return
    for key in ("initContainers", "containers"):
        for container in pod.get(key) or []:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                yield container["image"]


def _named(value: Any) -> Iterator[ImageRef]:
    """Every image reference a YAML value spells, in the three shapes `actions.git.edit` edits."""
    if isinstance(value, list):
        for item in value:
            yield from _named(item)
        return
    if not isinstance(value, dict):
        return
    if "name" in value and ({"newTag", "digest"} & set(value)):
        yield ImageRef(
            str(value.get("newName") or value["name"]),
            str(value["newTag"]) if value.get("newTag") else None,
            str(value["digest"]) if value.get("digest") else None,
        )
    if "repository" in value and ({"tag", "digest"} & set(value)):
        registry = value.get("registry")
        repository = f"{registry}/{value['repository']}" if registry else str(value["repository"])
        tag = str(value["tag"]) if value.get("tag") else None
        digest = str(value["digest"]) if value.get("digest") else None
        if tag and tag.startswith("sha256:") and not digest:
            tag, digest = None, tag
        yield ImageRef(repository, tag, digest)
    for key, item in value.items():
        if isinstance(item, str) and key not in ("name", "newName", "repository"):
            ref = ImageRef.parse(item)
            if ref.tag or ref.digest:
                yield ref
        else:
            yield from _named(item)


def named_images(root: Path, under: str) -> list[ImageRef]:
    """The image references Git gives for `under`: rendered by kustomize, else as written."""
    folder = kustomization_root(root, under)
    if folder is not None:
        rendered = yaml.safe_load_all(kustomize(folder))
        return [ImageRef.parse(image) for doc in rendered for image in _pod_images(doc)]
    found: list[ImageRef] = []
    for path in yaml_files(root, under):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError:
            continue
        found.extend(ref for document in documents for ref in _named(document))
    return found


def desired(root: Path, under: str, repositories: set[str]) -> dict[str, list[str]]:
    """Per repository, the distinct references Git names for it under `under`."""
    named: dict[str, list[str]] = {repository: [] for repository in repositories}
    for ref in named_images(root, under):
        if ref.repository in named and str(ref) not in named[ref.repository]:
            named[ref.repository].append(str(ref))
    return named
