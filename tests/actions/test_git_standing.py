"""Where a proposed Git change stands: the review, what the branch names, bad commits again.

Real git on local bare repositories, real `kubectl kustomize`; GitHub's and GitLab's review
APIs through the stand-in in sandbox/forges.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from actions.git.desired import desired
from actions.git.edit import ImageRef
from actions.git.params import GitSource
from actions.git.propose import propose
from actions.git.standing import Standing, read_standing
from sandbox.forges import Forges
from tests.fakes.git_deploy import Deploy

GOOD = "registry.local:5000/voxflow/api:v1.2.3"
BAD = "registry.local:5000/voxflow/api:v1.2.4"
TOKEN = "glpat-the-bots-token-000001"
INCIDENT = "INC-20261207-101500"
MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: voxflow-api}
spec:
  template:
    spec:
      containers:
        - name: api
          image: registry.local:5000/voxflow/api:v1.2.3
"""
VALUES = """\
image:
  registry: registry.local:5000
  repository: voxflow/api
  tag: "v1.2.3"
"""


@pytest.fixture
def forges() -> Iterator[Forges]:
    served = Forges().start()
    served.grant(TOKEN)
    try:
        yield served
    finally:
        served.stop()


def released(tmp_path: Path, forges: Forges, name: str, text: str) -> Deploy:
    """A deploy repository whose last commit released the bad version."""
    deploy = Deploy(tmp_path, {name: text})
    deploy.release(name, text.replace("v1.2.3", "v1.2.4"))
    forges.add("voxflow/deploy", deploy.bare)
    return deploy


def source(deploy: Deploy, forges: Forges, **fields: object) -> GitSource:
    given: dict[str, object] = {
        "repository": deploy.url,
        "provider": "gitlab",
        "project": "voxflow/deploy",
        "api_url": f"{forges.url}/api/v4",
    }
    return GitSource.model_validate(given | fields)


def proposed(src: GitSource) -> tuple[int | None, str | None]:
    done = propose(
        src,
        to=ImageRef.parse(GOOD),
        bad=ImageRef.parse(BAD),
        incident=INCIDENT,
        why="v1.2.4 broke checkout.",
        token=TOKEN,
    )
    review = done.review.number if done.review is not None else None
    return review, done.commit.sha if done.commit is not None else None


def standing_of(
    src: GitSource, review: int | None, commit: str | None, since: str | None = None
) -> Standing:
    return read_standing(
        src, review=review, commit=commit, bad=(BAD,), good=(GOOD,), since=since, token=TOKEN
    )


def test_a_merge_request_is_open_until_merged_then_git_names_what_runs(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = released(tmp_path, forges, "apps/api/deployment.yaml", MANIFEST)
    src = source(deploy, forges, path="apps/api")
    review, commit = proposed(src)
    before = standing_of(src, review, commit)
    assert not before.landed and not before.closed and not before.conflicts
    assert before.named == {"registry.local:5000/voxflow/api": [BAD]}
    assert not before.names((GOOD,))
    assert review is not None and forges.merge("voxflow/deploy", review) is not None
    after = standing_of(src, review, commit)
    assert after.landed and after.names((GOOD,)) and after.head == deploy.head("main")


def test_a_merge_request_that_conflicts_or_is_closed_says_so(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = released(tmp_path, forges, "apps/api/deployment.yaml", MANIFEST)
    src = source(deploy, forges, path="apps/api")
    review, commit = proposed(src)
    deploy.commit(
        {"apps/api/deployment.yaml": MANIFEST.replace("v1.2.3", "v1.2.5")}, "release v1.2.5"
    )
    conflicting = standing_of(src, review, commit)
    assert conflicting.conflicts and not conflicting.landed
    assert review is not None
    forges.close("voxflow/deploy", review)
    closed = standing_of(src, review, commit)
    assert closed.closed and not closed.conflicts and not closed.landed


def test_a_direct_commit_to_helm_values_has_landed_and_git_names_the_joined_image(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = released(tmp_path, forges, "charts/api/values.yaml", VALUES)
    src = source(deploy, forges, path="charts/api/values.yaml", change="commit", provider=None)
    review, commit = proposed(src)
    assert review is None and commit == deploy.head("main")
    standing = standing_of(src, None, commit)
    assert standing.landed and standing.names((GOOD,))
    assert standing.named == {"registry.local:5000/voxflow/api": [GOOD]}


def test_a_kustomization_is_read_as_kustomize_renders_it(tmp_path: Path) -> None:
    folder = tmp_path / "apps" / "api"
    folder.mkdir(parents=True)
    (folder / "deployment.yaml").write_text(MANIFEST.replace(GOOD, "voxflow/api:v0"))
    (folder / "kustomization.yaml").write_text(
        "resources: [deployment.yaml]\n"
        "images:\n"
        "  - name: voxflow/api\n"
        "    newName: registry.local:5000/voxflow/api\n"
        "    newTag: v1.2.3\n"
    )
    assert desired(tmp_path, "apps/api", {"registry.local:5000/voxflow/api", "voxflow/api"}) == {
        "registry.local:5000/voxflow/api": [GOOD],
        "voxflow/api": [],  # the manifest's own image is replaced in the render
    }


def test_commits_naming_the_bad_version_again_are_found_and_lookalikes_are_not(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = released(tmp_path, forges, "apps/api/deployment.yaml", MANIFEST)
    src = source(deploy, forges, path="apps/api", change="commit", provider=None)
    _, commit = proposed(src)
    since = deploy.head("main")
    lookalike = MANIFEST.replace("v1.2.3", "v1.2.4-rc1")
    deploy.commit({"apps/api/deployment.yaml": lookalike}, "try the release candidate")
    again = deploy.commit(
        {"apps/api/deployment.yaml": MANIFEST.replace("v1.2.3", "v1.2.4")}, "release v1.2.4 again"
    )
    deploy.commit({"README.md": "v1.2.4 is bad\n"}, "a note outside the path")
    standing = standing_of(src, None, commit, since=since)
    assert [(c.sha, c.subject) for c in standing.bad_commits] == [(again, "release v1.2.4 again")]
    assert not standing.names((GOOD,))
