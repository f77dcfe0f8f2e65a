"""After a rollback, the bot proposes the change that makes Git name what production runs.

Real git on local bare repositories, real `kubectl kustomize` rendering; GitHub's and
GitLab's review APIs through the stand-in in sandbox/forges.py.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from actions.base import PermanentError
from actions.git.edit import ImageRef, set_image
from actions.git.forges import GitHub, GitLab, ReviewState
from actions.git.params import GitSource
from actions.git.propose import propose
from sandbox.forges import Forges
from tests.fakes.git_deploy import Deploy, run

GOOD = ImageRef.parse("registry.local:5000/voxflow/api:v1.2.3")
BAD = ImageRef.parse("registry.local:5000/voxflow/api:v1.2.4")
TOKEN = "ghp_test_token_for_the_bot_0001"
INCIDENT = "INC-20261207-101500"

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: voxflow-api   # the API
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers:
        - name: api
          image: "registry.local:5000/voxflow/api:v1.2.3"  # set by CI
        - name: proxy
          image: envoyproxy/envoy:v1.31.0
"""

KUSTOMIZATION = """\
resources:
  - deployment.yaml
images:
  - name: registry.local:5000/voxflow/api
    newTag: v1.2.3
"""

VALUES = """\
replicas: 3
image:
  registry: registry.local:5000
  repository: voxflow/api
  tag: "v1.2.3"   # bumped by the release job
"""


@pytest.fixture
def forges() -> Iterator[Forges]:
    served = Forges().start()
    served.grant(TOKEN)
    try:
        yield served
    finally:
        served.stop()


def source(deploy: Deploy, forges: Forges, **overrides: object) -> GitSource:
    fields: dict[str, object] = {
        "repository": deploy.url,
        "provider": "github",
        "project": "voxflow/deploy",
        "api_url": forges.url,
    }
    return GitSource.model_validate(fields | overrides)


def bad_release(tmp_path: Path, files: dict[str, str], name: str) -> Deploy:
    deploy = Deploy(tmp_path, files)
    deploy.release(name, files[name].replace("v1.2.3", "v1.2.4"))
    return deploy


def rendered_images(directory: Path) -> list[str]:
    """The images `kubectl kustomize` renders for the folder, as Argo CD and Flux would."""
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    images = []
    for document in yaml.safe_load_all(out):
        for container in document["spec"]["template"]["spec"]["containers"]:
            images.append(container["image"])
    return images


def test_a_pull_request_changes_only_the_image_line_of_a_plain_manifest(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = bad_release(
        tmp_path, {"apps/api/deployment.yaml": DEPLOYMENT}, "apps/api/deployment.yaml"
    )
    forges.add("voxflow/deploy", deploy.bare)
    main_before = deploy.head("main")
    proposal = propose(
        source(deploy, forges, path="apps/api"),
        to=GOOD,
        bad=BAD,
        incident=INCIDENT,
        why="v1.2.4 raised the error rate to 60%.",
        token=TOKEN,
    )
    assert proposal.review is not None and proposal.review.state is ReviewState.OPEN
    assert proposal.review.url == "https://github.com/voxflow/deploy/pull/1"
    branch = "rollback/inc-20261207-101500"
    assert deploy.head("main") == main_before  # nothing pushed to main
    assert deploy.show(branch, "apps/api/deployment.yaml") == DEPLOYMENT  # every comment kept
    assert proposal.said() == (
        "changed apps/api/deployment.yaml:12; review: https://github.com/voxflow/deploy/pull/1"
    )
    ((_, path, body),) = [r for r in forges.requests if r[0] == "POST"]
    assert path == "/repos/voxflow/deploy/pulls"
    assert body["head"] == branch and body["base"] == "main"
    assert INCIDENT in body["title"] and INCIDENT in body["body"]


def test_merging_the_pull_request_makes_the_rendered_state_name_the_good_version(
    tmp_path: Path, forges: Forges
) -> None:
    files = {"app/deployment.yaml": DEPLOYMENT, "app/kustomization.yaml": KUSTOMIZATION}
    deploy = bad_release(tmp_path, files, "app/kustomization.yaml")
    forges.add("voxflow/deploy", deploy.bare)
    proposal = propose(
        source(deploy, forges, path="app"), to=GOOD, bad=BAD, incident=INCIDENT, why="why",
        token=TOKEN,
    )  # fmt: skip
    assert proposal.commit is not None
    ((changed, changes),) = [(f.path, f.changes) for f in proposal.commit.files]
    assert changed == "app/kustomization.yaml"  # the manifest's own tag is overridden there
    assert [(c.before, c.after) for c in changes] == [("v1.2.4", "v1.2.3")]
    assert proposal.review is not None
    assert forges.merge("voxflow/deploy", proposal.review.number) is not None
    review = GitHub(api_url=forges.url, repository="voxflow/deploy", token=TOKEN).get(
        proposal.review.number
    )
    assert review.state is ReviewState.MERGED and review.merge_commit == deploy.head("main")
    checkout = tmp_path / "checkout"
    run("git", "clone", "--quiet", deploy.url, str(checkout), cwd=tmp_path)
    assert rendered_images(checkout / "app") == [str(GOOD), "envoyproxy/envoy:v1.31.0"]


def test_a_helm_values_tag_is_changed_in_its_own_quotes(tmp_path: Path, forges: Forges) -> None:
    deploy = bad_release(tmp_path, {"chart/values-prod.yaml": VALUES}, "chart/values-prod.yaml")
    forges.add("voxflow/deploy", deploy.bare)
    propose(
        source(deploy, forges, path="chart/values-prod.yaml"), to=GOOD, bad=BAD,
        incident=INCIDENT, why="why", token=TOKEN,
    )  # fmt: skip
    assert deploy.show("rollback/inc-20261207-101500", "chart/values-prod.yaml") == VALUES


def test_a_kustomize_digest_is_removed_when_the_good_version_is_a_tag() -> None:
    pinned = KUSTOMIZATION.replace(
        "newTag: v1.2.3", "newTag: v1.2.4\n    digest: sha256:" + "b" * 64
    )
    text, changes = set_image(pinned, repository=GOOD.repository, to=GOOD)
    assert text == KUSTOMIZATION
    assert [c.after for c in changes] == ["v1.2.3", ""]


def test_proposing_again_after_a_crash_reuses_the_branch_and_the_pull_request(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = bad_release(tmp_path, {"deployment.yaml": DEPLOYMENT}, "deployment.yaml")
    forges.add("voxflow/deploy", deploy.bare)
    first = propose(
        source(deploy, forges), to=GOOD, bad=BAD, incident=INCIDENT, why="w", token=TOKEN
    )
    branch_head = deploy.head("rollback/inc-20261207-101500")
    again = propose(
        source(deploy, forges), to=GOOD, bad=BAD, incident=INCIDENT, why="w", token=TOKEN
    )
    assert again.commit is not None and again.commit.reused
    assert deploy.head("rollback/inc-20261207-101500") == branch_head
    assert again.review == first.review
    assert len(forges.repos["voxflow/deploy"].pulls) == 1


def test_commit_mode_pushes_to_the_branch_itself(tmp_path: Path, forges: Forges) -> None:
    deploy = bad_release(tmp_path, {"deployment.yaml": DEPLOYMENT}, "deployment.yaml")
    proposal = propose(
        source(deploy, forges, change="commit", provider=None),
        to=GOOD, bad=BAD, incident=INCIDENT, why="w",
    )  # fmt: skip
    assert proposal.review is None and proposal.commit is not None
    assert deploy.head("main") == proposal.commit.sha
    assert deploy.show("main", "deployment.yaml") == DEPLOYMENT
    assert deploy.branches() == ["main"]


def test_revert_mode_reverts_the_commit_that_introduced_the_bad_version(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = Deploy(tmp_path, {"deployment.yaml": DEPLOYMENT})
    bad = deploy.release("deployment.yaml", DEPLOYMENT.replace("v1.2.3", "v1.2.4"))
    forges.add("voxflow/deploy", deploy.bare)
    proposal = propose(
        source(deploy, forges, how="revert"), to=GOOD, bad=BAD, incident=INCIDENT, why="w",
        token=TOKEN,
    )  # fmt: skip
    assert proposal.reverted == bad
    log = run("git", "log", "-1", "--format=%s", "rollback/inc-20261207-101500", cwd=deploy.bare)
    assert log.startswith(f"Revert {bad[:12]}")
    assert deploy.show("rollback/inc-20261207-101500", "deployment.yaml") == DEPLOYMENT


def test_revert_mode_edits_when_reverting_would_not_land_on_the_good_version(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = Deploy(tmp_path, {"deployment.yaml": DEPLOYMENT})
    deploy.release("deployment.yaml", DEPLOYMENT.replace("v1.2.3", "v1.2.4"))
    deploy.commit({"deployment.yaml": DEPLOYMENT.replace("v1.2.3", "v1.2.5")}, "release v1.2.5")
    forges.add("voxflow/deploy", deploy.bare)
    # Rolled back from v1.2.5 to v1.2.3: reverting v1.2.5's commit would leave v1.2.4.
    proposal = propose(
        source(deploy, forges, how="revert"), to=GOOD,
        bad=ImageRef.parse("registry.local:5000/voxflow/api:v1.2.5"), incident=INCIDENT,
        why="w", token=TOKEN,
    )  # fmt: skip
    assert proposal.reverted is None
    assert deploy.show("rollback/inc-20261207-101500", "deployment.yaml") == DEPLOYMENT


def test_git_that_already_names_the_version_is_left_alone(tmp_path: Path, forges: Forges) -> None:
    deploy = Deploy(tmp_path, {"deployment.yaml": DEPLOYMENT})
    forges.add("voxflow/deploy", deploy.bare)
    proposal = propose(
        source(deploy, forges), to=GOOD, bad=BAD, incident=INCIDENT, why="w", token=TOKEN
    )
    assert proposal.already and proposal.commit is None and proposal.review is None
    assert deploy.branches() == ["main"] and not forges.requests


def test_a_path_that_does_not_name_the_image_is_refused_by_name(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = Deploy(tmp_path, {"deployment.yaml": DEPLOYMENT.replace("voxflow/api", "voxflow/web")})
    with pytest.raises(
        PermanentError, match=r"no YAML file under \. .* names registry.local:5000/voxflow/api"
    ):
        propose(source(deploy, forges), to=GOOD, bad=BAD, incident=INCIDENT, why="w", token=TOKEN)
    assert deploy.branches() == ["main"]


def test_a_bad_token_is_refused_with_what_to_check(tmp_path: Path, forges: Forges) -> None:
    deploy = bad_release(tmp_path, {"deployment.yaml": DEPLOYMENT}, "deployment.yaml")
    forges.add("voxflow/deploy", deploy.bare)
    with pytest.raises(PermanentError, match="the token was refused"):
        propose(source(deploy, forges), to=GOOD, bad=BAD, incident=INCIDENT, why="w", token="wrong")
    assert not forges.repos["voxflow/deploy"].pulls


def test_write_access_is_read_before_approval(tmp_path: Path, forges: Forges) -> None:
    deploy = Deploy(tmp_path, {"deployment.yaml": DEPLOYMENT})
    forges.add("voxflow/deploy", deploy.bare)
    forges.grant("read-only-token", push=False)
    forges.grant("app-installation-token", permissions=False)
    github = lambda token: GitHub(api_url=forges.url, repository="voxflow/deploy", token=token)  # noqa: E731
    assert github(TOKEN).may_push() is True
    assert github("read-only-token").may_push() is False
    assert github("app-installation-token").may_push() is None  # GitHub does not say: unknown
    gitlab = GitLab(
        api_url=f"{forges.url}/api/v4", repository="voxflow/deploy", token="read-only-token"
    )
    assert gitlab.may_push() is False


def test_a_gitlab_merge_request_is_opened_once(tmp_path: Path, forges: Forges) -> None:
    deploy = bad_release(tmp_path, {"deployment.yaml": DEPLOYMENT}, "deployment.yaml")
    forges.add("voxflow/deploy", deploy.bare)
    gitlab = source(deploy, forges, provider="gitlab", api_url=f"{forges.url}/api/v4")
    first = propose(gitlab, to=GOOD, bad=BAD, incident=INCIDENT, why="w", token=TOKEN)
    again = propose(gitlab, to=GOOD, bad=BAD, incident=INCIDENT, why="w", token=TOKEN)
    assert first.review is not None and again.review == first.review
    assert first.review.url == "https://gitlab.com/voxflow/deploy/-/merge_requests/1"
    statuses = [(method, path) for method, path, _ in forges.requests if method == "POST"]
    assert statuses == [("POST", "/api/v4/projects/voxflow%2Fdeploy/merge_requests")] * 2


def test_a_review_closed_unmerged_or_conflicting_is_reported_as_such(
    tmp_path: Path, forges: Forges
) -> None:
    deploy = bad_release(tmp_path, {"deployment.yaml": DEPLOYMENT}, "deployment.yaml")
    forges.add("voxflow/deploy", deploy.bare)
    proposal = propose(
        source(deploy, forges), to=GOOD, bad=BAD, incident=INCIDENT, why="w", token=TOKEN
    )
    assert proposal.review is not None
    github = GitHub(api_url=forges.url, repository="voxflow/deploy", token=TOKEN)
    # Someone changes the same line on main: the pull request now conflicts.
    deploy.commit({"deployment.yaml": DEPLOYMENT.replace("v1.2.3", "v1.2.6")}, "release v1.2.6")
    assert github.get(proposal.review.number).conflicts
    forges.close("voxflow/deploy", proposal.review.number)
    assert github.get(proposal.review.number).state is ReviewState.CLOSED
