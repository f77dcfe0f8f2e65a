"""Make a file in Git name the version production runs, changing only the characters that say it.

After a rollback, Git still names the bad version: whoever resumes sync redeploys it. The
change that makes Git match production is the smallest one a reviewer can read in a pull
request: the tag or digest of one image, in place, with every comment, quote style and
key order around it kept. So files are not loaded and dumped again: PyYAML composes them
into nodes whose marks say where each scalar stands in the text, and only those spans are
rewritten. Three shapes name an image, and all three are found by their meaning, not by
file name:

- a whole reference in one string, as a manifest's `image: registry/app:v1.2.4`, or a
  Helm values file's `image: "registry/app:v1.2.4"`;
- a kustomization's `images:` entry (`name`, `newName`, `newTag`, `digest`): kustomize
  writes `newName` (or `name`) with `digest` when one is set, else with `newTag`
  (kubernetes-sigs/kustomize api/filters/imagetag/updater.go), so a digest left beside a
  new tag would win: it is replaced, or removed when the new point is a tag;
- a mapping with `repository` and `tag` (or `digest`) siblings, the Helm charts' habit.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import yaml

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageRef:
    """An image reference split the way container runtimes read it."""

    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        """Split `registry:5000/app:v1@sha256:…`; a `:` before the last `/` is a port."""
        name, _, digest = text.partition("@")
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            return cls(name[:colon], name[colon + 1 :] or None, digest or None)
        return cls(name, None, digest or None)

    def __str__(self) -> str:
        return (
            self.repository
            + (f":{self.tag}" if self.tag else "")
            + (f"@{self.digest}" if self.digest else "")
        )

    def point(self) -> str:
        """The version part only: `v1.2.3`, `sha256:…`, or both."""
        return str(self)[len(self.repository) :].lstrip(":@") or "latest"


@dataclass(frozen=True)
class Change:
    """One span of a file rewritten: where, what it said, what it says now."""

    line: int
    """1-based, as editors and pull requests count."""
    before: str
    after: str


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    text: str


def set_image(text: str, *, repository: str, to: ImageRef) -> tuple[str, list[Change]]:
    """Return `text` with every reference to `repository` pointing at `to`, and the changes."""
    if to.repository != repository:
        raise ValueError(f"{to} is not an image of {repository}")
    try:
        documents = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.YAMLError:
        return text, []
    edits: list[tuple[Span, str]] = []
    for document in documents:
        if document is not None:
            edits.extend(_edits(document, repository, to, text))
    changes: list[Change] = []
    for span, new in sorted(edits, key=lambda edit: edit[0].start, reverse=True):
        before = span.text
        text = text[: span.start] + new + text[span.end :]
        line = text.count("\n", 0, span.start) + 1
        changes.append(Change(line, before.strip(), new.strip()))
    return text, sorted(changes, key=lambda change: change.line)


def _edits(node: yaml.Node, repository: str, to: ImageRef, text: str) -> Iterator[tuple[Span, str]]:
    if isinstance(node, yaml.SequenceNode):
        for item in node.value:
            yield from _edits(item, repository, to, text)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    fields = {
        key.value: (key, value)
        for key, value in node.value
        if isinstance(key, yaml.ScalarNode) and isinstance(value, yaml.ScalarNode)
    }
    yield from _kustomize_entry(fields, repository, to, text)
    yield from _repository_and_tag(fields, repository, to, text)
    for key, value in node.value:
        if (
            isinstance(value, yaml.ScalarNode)
            and value.tag == "tag:yaml.org,2002:str"
            and isinstance(key, yaml.ScalarNode)
            and key.value not in ("name", "newName", "repository")
        ):
            ref = ImageRef.parse(value.value)
            if ref.repository == repository and (ref.tag or ref.digest) and str(ref) != str(to):
                yield _replace(value, str(to), text)
        else:
            yield from _edits(value, repository, to, text)


Fields = dict[str, tuple[yaml.ScalarNode, yaml.ScalarNode]]


def _kustomize_entry(
    fields: Fields, repository: str, to: ImageRef, text: str
) -> Iterator[tuple[Span, str]]:
    """A kustomization `images:` entry for the repository, read as kustomize reads it."""
    if "name" not in fields or not ({"newTag", "digest"} & set(fields)):
        return
    named = fields.get("newName", fields["name"])[1].value
    if named != repository:
        return
    yield from _set_siblings(fields, "newTag", to, text)


def _repository_and_tag(
    fields: Fields, repository: str, to: ImageRef, text: str
) -> Iterator[tuple[Span, str]]:
    """A Helm-style `{repository, tag, digest}` mapping for the repository."""
    if "repository" not in fields or not ({"tag", "digest"} & set(fields)):
        return
    registry = fields.get("registry")
    named = fields["repository"][1].value
    if registry is not None and registry[1].value:
        named = f"{registry[1].value}/{named}"
    if named != repository:
        return
    yield from _set_siblings(fields, "tag", to, text)


def _set_siblings(
    fields: Fields, tag_key: str, to: ImageRef, text: str
) -> Iterator[tuple[Span, str]]:
    tag = fields.get(tag_key)
    digest = fields.get("digest")
    if to.tag and tag is not None and tag[1].value != to.tag:
        yield _replace(tag[1], to.tag, text)
    if to.digest:
        if digest is not None and digest[1].value != to.digest:
            yield _replace(digest[1], to.digest, text)
        if digest is None and tag is not None and not to.tag:
            # No digest key to set: the tag key carries the digest (`tag: sha256:…` is not
            # a tag), so say the digest after the repository instead.
            yield _replace(tag[1], to.digest, text)
    elif digest is not None:
        yield _remove_line(digest[0], digest[1], text)


def _replace(node: yaml.ScalarNode, value: str, text: str) -> tuple[Span, str]:
    """Rewrite a scalar in the style it was written: plain, 'single' or "double" quoted."""
    start, end = node.start_mark.index, node.end_mark.index
    style = node.style or ""
    return Span(start, end, text[start:end]), f"{style}{value}{style}"


def _remove_line(key: yaml.ScalarNode, value: yaml.ScalarNode, text: str) -> tuple[Span, str]:
    """Remove a `key: value` that stands on a line of its own (with its line break)."""
    start = text.rfind("\n", 0, key.start_mark.index) + 1
    end = text.find("\n", value.end_mark.index)
    end = len(text) if end == -1 else end + 1
    if text[start : key.start_mark.index].strip():
        # Not alone on its line (a list item's first key, a flow mapping): blank the value.
        return _replace(value, '""', text)
    return Span(start, end, text[start:end]), ""


def is_digest(point: str) -> bool:
    """Whether a version point is a content digest rather than a tag."""
    return bool(_DIGEST.match(point))
