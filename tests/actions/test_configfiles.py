"""Configuration backup, restore and restart on temp directories, moto's S3 and scripted HTTP."""

from __future__ import annotations

import os
import sys
import tarfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from pydantic import ValidationError

from actions.base import PermanentError, PlanningError, StepContext, TemporaryError
from actions.configfiles import (
    PRE_BACKUP_KEY,
    BackupConfig,
    ConfigFilesParams,
    ConfigFilesTarget,
    RestartApp,
    RestartDeployment,
    RestoreConfig,
    backup_name,
)
from actions.kubernetes import KubeConnection
from actions.params import AwsConnection
from sandbox.web import Reply, WebStub
from tests.fakes.configfiles import (
    OLD,
    OLDER,
    Member,
    config_archive,
    file_member,
    make_params,
    tar_gz,
)

pytest_plugins = ["tests.fakes.aws", "tests.fakes.configfiles"]


def link_member(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> Member:
    """Return a symlink (or hard link) member."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def device_member(name: str, kind: bytes = tarfile.CHRTYPE) -> Member:
    """Return a character device (or FIFO) member."""
    info = tarfile.TarInfo(name)
    info.type = kind
    return info, None


def setuid_member(name: str) -> Member:
    """Return a set-user-ID file member."""
    info, data = file_member(name, "#!/bin/sh\n")
    info.mode = 0o4755
    return info, data


def snapshot(directory: Path) -> dict[str, str]:
    """Return {relative path: text} of every file under `directory`."""
    return {
        str(p.relative_to(directory)): p.read_text()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def run_step(step: Any, ctx: StepContext | None = None) -> Any:
    """Run `step` with a context whose deadline is the step's timeout."""
    return step.run(ctx or StepContext.for_test(timeout=step.timeout))


def siblings(live: Path) -> list[str]:
    """Return the names beside `live` other than itself."""
    return sorted(p.name for p in live.parent.iterdir() if p != live)


# --- listing and planning ---------------------------------------------------------


def test_points_list_backups_newest_first_and_skip_other_files(live: Path, backups: Path) -> None:
    points = ConfigFilesTarget(make_params(live, str(backups))).points()
    assert [p.ref for p in points] == [backup_name(OLD), backup_name(OLDER)]
    assert points[0].created_at == OLD
    assert points[0].label.startswith("2024-01-01 12:00:00 UTC")


def test_plan_backs_up_first_then_restores_the_newest_backup(live: Path, backups: Path) -> None:
    params = make_params(live, str(backups), restart_command=["true"])
    plan = ConfigFilesTarget(params).plan(None)
    assert [type(s) for s in (*plan.prepare, *plan.rollback, *plan.verify)] == [
        BackupConfig,
        RestoreConfig,
        RestartApp,
    ]
    assert str(backups / backup_name(OLD)) in plan.rollback[0].describe()


def test_plan_refuses_an_unknown_backup_and_an_empty_store(live: Path, tmp_path: Path) -> None:
    target = ConfigFilesTarget(make_params(live, str(tmp_path / "none")))
    with pytest.raises(PlanningError, match="no configuration backup"):
        target.plan(None)
    with pytest.raises(PlanningError, match="no backup 'config_backup_20200101_000000"):
        target.plan("config_backup_20200101_000000.tar.gz")


def test_params_refuse_two_restart_methods(live: Path, backups: Path) -> None:
    with pytest.raises(ValidationError, match="at most one"):
        make_params(
            live,
            str(backups),
            restart_command=["systemctl", "restart", "voxflow-api"],
            restart_deployment=RestartDeployment(namespace="prod", deployment="api"),
        )


# --- backup and restore on a local directory -------------------------------------------


def test_backup_archives_the_live_directory_and_records_its_name(live: Path, backups: Path) -> None:
    step = BackupConfig(make_params(live, str(backups)), restoring=backup_name(OLD))
    ctx = StepContext.for_test()
    result = run_step(step, ctx)
    name = ctx.memory[PRE_BACKUP_KEY]
    assert result.data["backup"] == name
    with tarfile.open(backups / name) as tar:
        assert "./sub/db.conf" in tar.getnames()
        member = tar.extractfile("./app.yaml")
        assert member is not None and member.read() == b"version: 3\n"
    again = run_step(step, ctx)
    assert again.summary == f"already backed up as {name}"


def test_full_rollback_restores_the_chosen_backup_and_keeps_the_pre_rollback_copy(
    live: Path, backups: Path
) -> None:
    before = snapshot(live)
    plan = ConfigFilesTarget(make_params(live, str(backups))).plan(None)
    ctx = StepContext.for_test()
    run_step(plan.prepare[0], ctx)
    result = run_step(plan.rollback[0], ctx)
    assert snapshot(live) == {"app.yaml": "version: 2\n", "sub/db.conf": "pool=20\n"}
    assert result.data["backup"] == backup_name(OLD)
    assert result.data["pre_rollback_backup"].endswith(".before-20240101_120000.tar.gz")
    with tarfile.open(backups / result.data["pre_rollback_backup"]) as saved:
        saved.extractall(live.parent / "check", filter="data")
    assert snapshot(live.parent / "check") == before
    assert siblings(live) == ["check"]


def test_backup_refuses_a_live_link_that_a_restore_would_reject(live: Path, backups: Path) -> None:
    (live / "cert.pem").symlink_to("/etc/hostname")
    with pytest.raises(PermanentError, match=r"'\./cert\.pem'.*leaves the directory"):
        run_step(BackupConfig(make_params(live, str(backups)), restoring=backup_name(OLD)))
    assert len(ConfigFilesTarget(make_params(live, str(backups))).points()) == 2


BAD_MEMBERS: dict[str, list[Member]] = {
    "absolute path": [file_member("/etc/cron.d/evil", "* * * * * root sh\n")],
    "parent path": [file_member("./../../outside.conf", "x\n")],
    "symlink escaping": [link_member("./sub", "../../.."), file_member("./sub/x", "x\n")],
    "absolute symlink": [link_member("./passwd", "/etc/passwd")],
    "hard link escaping": [link_member("./shadow", "../shadow", tarfile.LNKTYPE)],
    "device file": [device_member("./null")],
    "fifo": [device_member("./pipe", tarfile.FIFOTYPE)],
    "link through a link": [link_member("./here", "."), link_member("./here/up", "..")],
    "setuid file": [setuid_member("./run.sh")],
}


@pytest.mark.parametrize("case", sorted(BAD_MEMBERS))
def test_malicious_archive_is_refused_with_nothing_changed(
    case: str, live: Path, backups: Path
) -> None:
    name = backup_name(datetime(2024, 2, 1, tzinfo=UTC))
    members = [file_member("./app.yaml", "version: 0\n"), *BAD_MEMBERS[case]]
    (backups / name).write_bytes(tar_gz(members))
    bad_name = {"link through a link": "./here/up"}.get(case, BAD_MEMBERS[case][0][0].name)
    before = snapshot(live)
    target = ConfigFilesTarget(make_params(live, str(backups)))
    assert not target.checks(name)[-1].ok
    with pytest.raises(PlanningError, match=f"refusing member '{bad_name}'"):
        target.plan(name)
    with pytest.raises(PermanentError, match=f"refusing member '{bad_name}'"):
        run_step(RestoreConfig(make_params(live, str(backups)), backup=name))
    assert snapshot(live) == before
    assert siblings(live) == []


def test_truncated_archive_is_refused_before_anything_changes(live: Path, backups: Path) -> None:
    name = backup_name(datetime(2024, 3, 1, tzinfo=UTC))
    whole = config_archive({"app.yaml": "version: 2\n" * 2000})
    (backups / name).write_bytes(whole[: len(whole) // 2])
    before = snapshot(live)
    with pytest.raises(PermanentError, match=r"not a readable tar\.gz"):
        run_step(RestoreConfig(make_params(live, str(backups)), backup=name))
    assert snapshot(live) == before


def test_restore_failing_half_way_leaves_the_live_directory_intact(
    live: Path, backups: Path
) -> None:
    name = backup_name(datetime(2024, 4, 1, tzinfo=UTC))
    members = [
        file_member("./app.yaml", "version: 2\n"),
        file_member("./sub", "a file where the next member needs a directory\n"),
        file_member("./sub/db.conf", "pool=20\n"),
    ]
    (backups / name).write_bytes(tar_gz(members))
    before = snapshot(live)
    with pytest.raises(PermanentError, match=r"failed: .*is unchanged"):
        run_step(RestoreConfig(make_params(live, str(backups)), backup=name))
    assert snapshot(live) == before
    assert siblings(live) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can restore other owners")
def test_restore_as_root_keeps_the_owners_recorded_in_the_archive(
    live: Path, backups: Path
) -> None:
    name = backup_name(datetime(2024, 5, 1, tzinfo=UTC))
    info, data = file_member("./app.yaml", "version: 2\n")
    info.uid, info.gid, info.uname, info.gname = 4242, 4343, "", ""
    (backups / name).write_bytes(tar_gz([(info, data)]))
    run_step(RestoreConfig(make_params(live, str(backups)), backup=name))
    stat = (live / "app.yaml").stat()
    assert (stat.st_uid, stat.st_gid) == (4242, 4343)


# --- S3 ------------------------------------------------------------------------------


@pytest.fixture
def bucket(aws: AwsConnection) -> str:
    """Create a bucket in moto holding one backup under `config/prod/`."""
    s3 = boto3.client("s3", region_name=aws.region, endpoint_url=aws.endpoint_url)
    name = f"backups-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    archive = config_archive({"app.yaml": "version: 2\n"})
    s3.put_object(Bucket=name, Key=f"config/prod/{backup_name(OLD)}", Body=archive)
    s3.put_object(Bucket=name, Key=f"config/prod/older/{backup_name(OLDER)}", Body=archive)
    return name


def test_s3_backup_and_restore_round_trip(live: Path, bucket: str, aws: AwsConnection) -> None:
    params = make_params(live, f"s3://{bucket}/config/prod", aws=aws)
    target = ConfigFilesTarget(params)
    assert [p.ref for p in target.points()] == [backup_name(OLD)]
    assert all(c.ok for c in target.checks(None))
    plan = target.plan(None)
    ctx = StepContext.for_test()
    backed_up = run_step(plan.prepare[0], ctx)
    assert backed_up.data["location"].startswith(f"s3://{bucket}/config/prod/config_backup_")
    run_step(plan.rollback[0], ctx)
    assert snapshot(live) == {"app.yaml": "version: 2\n"}
    assert [p.ref for p in target.points()][1] == backup_name(OLD)


def test_s3_missing_bucket_is_a_planning_error_with_aws_message(
    live: Path, aws: AwsConnection
) -> None:
    target = ConfigFilesTarget(make_params(live, "s3://no-such-bucket-here/x", aws=aws))
    with pytest.raises(PlanningError, match="NoSuchBucket"):
        target.plan(None)


# --- restart -------------------------------------------------------------------------------


@pytest.fixture
def web() -> Iterator[WebStub]:
    """A scripted HTTP server for health URLs and a Kubernetes API."""
    with WebStub() as stub:
        yield stub


def python_command(code: str) -> list[str]:
    """Return an argv running `code` with this interpreter."""
    return [sys.executable, "-c", code]


def test_restart_command_output_is_captured_and_health_polled(
    live: Path, backups: Path, web: WebStub
) -> None:
    web.route("GET", "/health", Reply(503), Reply(200))
    command = python_command("print('restarted voxflow-api')")
    params = make_params(
        live, str(backups), restart_command=command, health_url=f"{web.url}/health"
    )
    lines: list[str] = []
    result = run_step(RestartApp(params), StepContext.for_test(emit=lines.append))
    assert "restarted voxflow-api" in result.output
    assert lines[0] == "restarted voxflow-api"
    assert "recovery_seconds" in result.data
    assert len(web.calls("GET", "/health")) == 2


def test_failed_restart_command_reports_status_and_output(live: Path, backups: Path) -> None:
    command = python_command("import sys; sys.exit('unit voxflow-api not found')")
    params = make_params(live, str(backups), restart_command=command)
    with pytest.raises(PermanentError, match="exited with status 1:\nunit voxflow-api not found"):
        run_step(RestartApp(params))


def test_restart_command_running_too_long_is_stopped(live: Path, backups: Path) -> None:
    command = python_command("import time; time.sleep(10)")
    params = make_params(live, str(backups), restart_command=command, restart_timeout=0.3)
    with pytest.raises(PermanentError, match="did not finish within"):
        run_step(RestartApp(params))


def test_restart_fails_when_health_never_passes(live: Path, backups: Path, web: WebStub) -> None:
    web.route("GET", "/health", Reply(500))
    params = make_params(
        live, str(backups), restart_command=["true"], health_url=f"{web.url}/health"
    )
    with pytest.raises(PermanentError, match="answered 500 after restart"):
        run_step(RestartApp(params), StepContext.for_test(timeout=0.6))


DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "api", "namespace": "prod"},
    "spec": {
        "selector": {"matchLabels": {"app": "api"}},
        "template": {
            "metadata": {"labels": {"app": "api"}},
            "spec": {"containers": [{"name": "api", "image": "voxflow/api:v1.2.3"}]},
        },
    },
}
PATCH_PATH = "/apis/apps/v1/namespaces/prod/deployments/api"


def kube_params(live: Path, backups: Path, web: WebStub, tmp_path: Path) -> ConfigFilesParams:
    """Return params restarting prod/api through a kubeconfig pointing at `web`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "stub", "cluster": {"server": web.url}}],
        "users": [{"name": "bot", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "bot"}}],
        "current-context": "stub",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    connection = KubeConnection(kubeconfig=str(path))
    target = RestartDeployment(namespace="prod", deployment="api", connection=connection)
    return make_params(live, str(backups), restart_deployment=target)


def test_rollout_restart_patches_the_restarted_at_annotation(
    live: Path, backups: Path, web: WebStub, tmp_path: Path
) -> None:
    web.route("PATCH", PATCH_PATH, Reply(200, json=DEPLOYMENT))
    step = RestartApp(kube_params(live, backups, web, tmp_path))
    assert "prod/api" in step.describe()
    result = run_step(step)
    (call,) = web.calls("PATCH", PATCH_PATH)
    assert call.headers["Content-Type"] == "application/strategic-merge-patch+json"
    annotations = call.json()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["kubectl.kubernetes.io/restartedAt"].endswith("Z")
    assert "restarted deployment prod/api" in result.output


@pytest.mark.parametrize(("status", "kind"), [(404, PermanentError), (503, TemporaryError)])
def test_rollout_restart_errors_say_whether_to_retry(
    status: int, kind: type[Exception], live: Path, backups: Path, web: WebStub, tmp_path: Path
) -> None:
    web.route("PATCH", PATCH_PATH, Reply(status, json={"message": "deployments 'api' issue"}))
    with pytest.raises(kind, match=f"restart deployment prod/api: {status}"):
        run_step(RestartApp(kube_params(live, backups, web, tmp_path)))


def test_rollout_restart_with_an_unreadable_kubeconfig_is_a_permanent_error(
    live: Path, backups: Path, tmp_path: Path
) -> None:
    connection = KubeConnection(kubeconfig=str(tmp_path / "no-such-kubeconfig"))
    target = RestartDeployment(namespace="prod", deployment="api", connection=connection)
    params = make_params(live, str(backups), restart_deployment=target)
    with pytest.raises(PermanentError, match="cannot load the Kubernetes connection"):
        run_step(RestartApp(params))
