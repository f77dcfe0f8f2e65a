"""The rollback config file: the example passes; broken files get one clear line per problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.__main__ import main
from bot.config import UnknownTarget, load_config, parse_config
from bot.config_file import ConfigError
from tests.fakes.config import config_dict

EXAMPLE = Path(__file__).parents[2] / "examples" / "voxflow.yml"


def problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, path=Path("bad.yml"))
    return info.value.problems


def test_voxflow_example_describes_the_procedures_system() -> None:
    config = load_config(EXAMPLE)
    prod = config.environments["prod"]
    app = prod.targets["app"]
    assert app.kind == "kubernetes"
    assert (app.namespace, app.deployment) == ("voxflow-prod", "voxflow-api")
    assert app.workers == ["voxflow-worker", "voxflow-scheduler"]
    assert prod.targets["db"].connection.dbname == "voxflow_prod"
    assert set(prod.targets) >= {"app", "db", "config", "lb", "full"}
    assert prod.thresholds.error_rate_percent == 50


def test_check_config_prints_a_summary_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "environment prod" in out
    assert "target app: kubernetes deployment/voxflow-api in voxflow-prod" in out


def test_missing_field_is_named_by_its_path() -> None:
    raw = config_dict()
    del raw["environments"]["prod"]["targets"]["app"]["namespace"]
    assert problems(raw) == ["environments.prod.targets.app.namespace: field required"]


def test_unknown_keys_are_errors_not_ignored() -> None:
    raw = config_dict(aproovers={"users": ["UBOB000001"]})
    raw["environments"]["prod"]["targets"]["app"]["replicaz"] = 3
    assert sorted(problems(raw)) == [
        "environments.prod.aproovers: unknown key",
        "environments.prod.targets.app.replicaz: unknown key",
    ]


def test_every_problem_is_reported_not_only_the_first() -> None:
    raw = config_dict(approvals_required=0)
    raw["environments"]["prod"]["targets"]["db"]["connection"] = {}
    found = problems(raw)
    assert len(found) == 2
    assert any(p.startswith("environments.prod.approvals_required:") for p in found)
    assert "environments.prod.targets.db.connection.dbname: field required" in found


def test_unknown_target_kind_is_named() -> None:
    raw = config_dict()
    raw["environments"]["prod"]["targets"]["app"]["kind"] = "helm"
    (problem,) = problems(raw)
    assert problem.startswith("environments.prod.targets.app:")
    assert "kubernetes" in problem


def test_bad_slack_ids_are_refused() -> None:
    raw = config_dict(approvers={"users": ["bob"]})
    (problem,) = problems(raw)
    assert "environments.prod.approvers.users" in problem
    assert "'bob' is not a Slack user id" in problem


def test_full_rollback_must_name_existing_targets() -> None:
    raw = config_dict()
    raw["environments"]["prod"]["targets"]["full"]["targets"] = ["db", "api"]
    (problem,) = problems(raw)
    assert "no target named 'api'" in problem


def test_environment_without_approvers_is_refused() -> None:
    raw = config_dict(approvers={})
    (problem,) = problems(raw)
    assert "name at least one user or group" in problem


def test_broken_yaml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rollback.yml"
    path.write_text("environments:\n  prod: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "not valid YAML" in info.value.problems[0]


def test_check_config_on_a_broken_file_exits_two_with_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = config_dict()
    del raw["environments"]["prod"]["targets"]["app"]["namespace"]
    raw["environments"]["prod"]["colour"] = "red"
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert sorted(err) == [
        f"{path}: environments.prod.colour: unknown key",
        f"{path}: environments.prod.targets.app.namespace: field required",
    ]


def test_missing_file_exits_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(tmp_path / "nope.yml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_unknown_target_lookup_lists_the_known_ones() -> None:
    config = parse_config(config_dict(), path=Path("x.yml"))
    with pytest.raises(
        UnknownTarget, match=r"unknown target 'api' in prod \(known: app, db, full\)"
    ):
        config.target("prod", "api")
    with pytest.raises(UnknownTarget, match="unknown environment 'qa'"):
        config.target("qa", "app")


def test_environment_variables_are_expanded_in_strings(tmp_path: Path) -> None:
    raw = config_dict(health_url="http://127.0.0.1:${WEB_PORT}/health")
    path = tmp_path / "rollback.yml"
    path.write_text(yaml.safe_dump(raw))
    config = load_config(path, environ={"WEB_PORT": "8080"})
    assert config.environments["prod"].health_url == "http://127.0.0.1:8080/health"


def test_unset_environment_variable_is_named_with_its_field(tmp_path: Path) -> None:
    raw = config_dict(health_url="http://${NOPE}/health")
    path = tmp_path / "rollback.yml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.problems == [
        "environments.prod.health_url: environment variable NOPE is not set"
    ]


def test_self_hosted_database_needs_a_backups_directory() -> None:
    raw = config_dict()
    del raw["environments"]["prod"]["targets"]["db"]["backups"]
    (problem,) = problems(raw)
    assert "targets.db.backups: required for a self-hosted database" in problem


ALIAS_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def _check_config_lines(path: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err.strip().splitlines()


def test_alias_bomb_exits_two_without_expanding_it(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yml"
    path.write_text(ALIAS_BOMB)
    assert len(ALIAS_BOMB) < 400
    # In a child limited to 512 MiB of address space: expanding the bomb would need far more.
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))"
    checked = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{limit}; import sys; from bot.__main__ import main; "
            f"sys.exit(main(['check-config', {str(path)!r}]))",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert checked.returncode == 2, checked.stderr
    (line,) = checked.stderr.strip().splitlines()
    assert line.startswith(f"{path}: expands to ") and "refused" in line


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("deep.yml", "[" * 20_000 + "]" * 20_000, "nested more than 64 levels deep"),
        ("deepmap.yml", "".join(" " * i + "a:\n" for i in range(200)) + " " * 200 + "b", "nested"),
        ("binary.yml", b"\x7fELF\x02\x01\x01\x00\x00\x00", "is a binary file"),
        ("latin1.yml", "environments:\n  caf\xe9: {}\n".encode("latin-1"), "is not UTF-8 text"),
        ("utf16.yml", "environments: {}\n".encode("utf-16"), "is UTF-16 text"),
        ("many-aliases.yml", "a: &a 1\nb: [" + ", ".join(["*a"] * 500) + "]\n", "aliases"),
        ("huge.yml", "# " + "x" * 1_100_000 + "\n", "larger than"),
    ],
)
def test_malformed_file_exits_two_with_one_line_naming_file_and_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    content: str | bytes,
    problem: str,
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    (line,) = _check_config_lines(path, capsys)
    assert line.startswith(f"{path}: ") and problem in line


def test_a_directory_given_as_the_file_exits_two(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (line,) = _check_config_lines(tmp_path, capsys)
    assert line == f"{tmp_path}: is a directory, not a config file"


def test_ordinary_anchors_and_aliases_still_load(tmp_path: Path) -> None:
    raw = config_dict()
    prod = raw["environments"]["prod"]
    raw["environments"]["staging"] = {**prod, "approvers": prod["approvers"]}
    # The same approvers object twice: safe_dump writes it as &id001 and *id001.
    path = tmp_path / "anchors.yml"
    path.write_text(yaml.safe_dump(raw))
    assert "*id001" in path.read_text()
    config = load_config(path)
    assert config.environments["staging"].approvers == config.environments["prod"].approvers
