"""Before approval, the bot says which commits a rollback takes away, read from the images' OCI
labels in the real registry and the real git repository they name; unknown is said, not guessed.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from actions.base import Level
from actions.git.params import ChangeSource
from actions.kubernetes import KubernetesParams, KubernetesTarget
from actions.registry import Unreadable, image_labels
from actions.undone import REVISION, SOURCE, compare_link, undone

if TYPE_CHECKING:
    from tests.fakes.dockerd import Engine, Registry
    from tests.fakes.kube import KubeCluster

pytest_plugins = ["tests.fakes.dockerd", "tests.fakes.kube"]


def git(*args: str, cwd: Path) -> str:
    env = {
        "GIT_AUTHOR_NAME": "dev",
        "GIT_AUTHOR_EMAIL": "dev@example.invalid",
        "GIT_COMMITTER_NAME": "dev",
        "GIT_COMMITTER_EMAIL": "dev@example.invalid",
        "HOME": str(cwd),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit(work: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", message, cwd=work)
    git("push", "--quiet", "origin", "HEAD:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


@pytest.fixture
def history(tmp_path: Path) -> tuple[str, str, str]:
    """An app repository: v1.2.3, then a security fix, a migration, a config change: v1.2.4."""
    bare, work = tmp_path / "app.git", tmp_path / "app"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=tmp_path)
    git("clone", "--quiet", str(bare), str(work), cwd=tmp_path)
    git("checkout", "--quiet", "-b", "main", cwd=work)
    good = commit(work, {"app.py": "v1.2.3\n"}, "release v1.2.3")
    commit(work, {"auth.py": "check\n"}, "Fix token check (CVE-2026-12345)")
    commit(work, {"migrations/003_drop_legacy.sql": "DROP TABLE legacy;\n"}, "migration 003")
    commit(work, {"config/limits.toml": "rate = 10\n"}, "lower the rate limit")
    bad = commit(work, {"app.py": "v1.2.4\n"}, "release v1.2.4")
    return bare.as_uri(), good, bad


def labelled(engine: Engine, registry: Registry, version: str, labels: dict[str, str]) -> str:
    """Build an image with these labels on the real engine and push it to the real registry."""
    image = f"{registry.address}/rbt-undone:{version}"
    lines = "".join(f'LABEL {key}="{value}"\n' for key, value in labels.items())
    engine.build(
        image, f"FROM scratch\nCOPY version /version\n{lines}", {"version": version.encode()}
    )
    anonymous = base64.urlsafe_b64encode(b"{}").decode()
    pushed = engine.call(
        "POST",
        f"/images/{registry.address}/rbt-undone/push",
        params={"tag": version},
        headers={"X-Registry-Auth": anonymous},
        timeout=60,
    )
    assert '"error"' not in pushed.text, pushed.text
    return image


def test_the_commits_a_rollback_takes_away_are_read_from_the_images_and_the_repository(
    dockerd: Engine, registry: Registry, history: tuple[str, str, str]
) -> None:
    source, good, bad = history
    target = labelled(dockerd, registry, "v1.2.3", {REVISION: good, SOURCE: source})
    running = labelled(dockerd, registry, "v1.2.4", {REVISION: bad, SOURCE: source})
    assert image_labels(running)[REVISION] == bad  # read from the registry, as a pull reads it
    found = undone(running=running, target=target, labels_of=image_labels)
    assert found.known
    assert [subject for _, subject in found.commits] == [
        "release v1.2.4",
        "lower the rate limit",
        "migration 003",
        "Fix token check (CVE-2026-12345)",
    ]
    assert [subject for _, subject in found.security] == ["Fix token check (CVE-2026-12345)"]
    assert found.migrations == ["migrations/003_drop_legacy.sql"]
    assert found.configuration == ["config/limits.toml"]
    assert found.risky == [
        "takes away 1 security fix(es)",
        "undoes the code of 1 migration file(s)",
        "undoes 1 configuration change(s)",
    ]
    said = found.said()
    assert said.startswith("undoes 4 commits\n") and "security fixes taken away:" in said


def test_an_image_without_a_revision_label_makes_it_unknown_and_says_which(
    dockerd: Engine, registry: Registry, history: tuple[str, str, str]
) -> None:
    source, good, _ = history
    target = labelled(dockerd, registry, "v1.2.3-l", {REVISION: good, SOURCE: source})
    running = labelled(dockerd, registry, "v1.2.4-nolabel", {SOURCE: source})
    found = undone(running=running, target=target, labels_of=image_labels)
    assert not found.known and not found.risky
    assert found.said() == (
        f"what this rollback undoes is unknown: {running} has no {REVISION} label"
    )


def test_an_image_the_registry_does_not_have_makes_it_unknown(registry: Registry) -> None:
    missing = f"{registry.address}/rbt-undone:never-pushed"
    with pytest.raises(Unreadable, match="HTTP 404"):
        image_labels(missing)
    found = undone(running=missing, target=missing, labels_of=image_labels)
    assert not found.known and "HTTP 404" in found.reason


def test_a_repository_the_bot_cannot_read_makes_it_unknown(tmp_path: Path) -> None:
    nowhere = (tmp_path / "gone.git").as_uri()
    found = undone(
        running="app:2",
        target="app:1",
        labels_of=lambda image: {REVISION: "a" * 40, SOURCE: nowhere},
    )
    assert not found.known and found.reason.startswith(f"cannot read {nowhere}: git clone:")


def test_a_revision_the_repository_does_not_have_makes_it_unknown(
    history: tuple[str, str, str],
) -> None:
    source, good, _ = history
    table = {"app:2": {REVISION: "f" * 40, SOURCE: source}, "app:1": {REVISION: good}}
    found = undone(running="app:2", target="app:1", labels_of=table.__getitem__)
    assert not found.known and found.reason == f"{source} has no commit ffffffffffff"


def test_rolling_back_to_the_same_revision_undoes_nothing(history: tuple[str, str, str]) -> None:
    source, good, _ = history
    table = {"a": {REVISION: good, SOURCE: source}, "b": {REVISION: good}}
    found = undone(running="a", target="b", labels_of=table.__getitem__)
    assert found.known and found.said() == "this rollback undoes no commit" and not found.risky


def test_the_compare_link_is_the_hosts_own_page() -> None:
    assert compare_link("https://github.com/voxflow/api.git", "abc", "def") == (
        "https://github.com/voxflow/api/compare/abc...def"
    )
    assert compare_link("https://gitlab.com/voxflow/api", "abc", "def") == (
        "https://gitlab.com/voxflow/api/-/compare/abc...def"
    )
    assert compare_link("file:///srv/api.git", "abc", "def") is None


def test_a_kubernetes_verdict_says_what_the_rollback_undoes(
    dockerd: Engine, registry: Registry, history: tuple[str, str, str], kube: KubeCluster
) -> None:
    source, good, bad = history
    target_image = labelled(dockerd, registry, "k8s-v1.2.3", {REVISION: good, SOURCE: source})
    running_image = labelled(dockerd, registry, "k8s-v1.2.4", {REVISION: bad, SOURCE: source})
    kube.fake.add_deployment("voxflow-prod", "voxflow-api", images=[target_image, running_image])
    params = KubernetesParams(
        kind="kubernetes",
        namespace="voxflow-prod",
        deployment="voxflow-api",
        connection=kube.connection,
        verify_images=False,
        changes=ChangeSource(),
    )
    findings = KubernetesTarget(params).evidence("1")
    said = [f for f in findings if f.text.startswith("undoes 4 commits")]
    assert len(said) == 1 and said[0].level is Level.OK
    risky = sorted(f.text for f in findings if f.level is Level.RISKY and "the rollback" in f.text)
    assert risky == [
        "the rollback takes away 1 security fix(es)",
        "the rollback undoes 1 configuration change(s)",
        "the rollback undoes the code of 1 migration file(s)",
    ]
