"""`rollback-bot demo` plays the whole incident on this machine and says when it cannot."""

from __future__ import annotations

import io
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bot import demo
from tests.fakes.processes import started

ROOT = Path(__file__).parents[1]


def test_demo_plays_the_incident_end_to_end_and_exits_zero() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "(only U0ALICE001 sees) :warning: You requested this rollback" in out
    assert "Approved by <@U0BOB00001>" in out
    assert "*Roll back voxflow-api to rev 2 (voxflow/api:v1.2.3)* succeeded" in out
    assert "Post-rollback verification" in out
    assert "| - **Impact**: Calls drop after 10 seconds since the v1.2.4 deploy" in out
    assert "timeline: phases and step durations" in out
    assert "| (a PNG image, " in out  # the chart is named, never printed as bytes
    assert "IEND" not in out
    last = out.strip().splitlines()[-1]
    assert "rolled back from voxflow/api:v1.2.4 to voxflow/api:v1.2.3" in last
    assert "s after bob's approval." in last


def test_demo_exits_non_zero_and_says_what_did_not_happen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> str:
        raise demo.DemoFailure("the plan in the incident thread did not happen within 20s")

    monkeypatch.setattr(demo, "play", broken)
    out = io.StringIO()
    assert demo.run(out=out) == 1
    assert (
        out.getvalue()
        .strip()
        .endswith("demo failed: the plan in the incident thread did not happen within 20s")
    )


def test_demo_failure_names_a_cluster_that_was_not_rolled_back() -> None:
    class Cluster:
        def deployment(self, namespace: str, name: str) -> dict:  # type: ignore[type-arg]
            image = demo.IMAGES[-1] if name == demo.APP else "w"
            return {
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"image": image}]}}}
            }

    with pytest.raises(demo.DemoFailure, match=r"voxflow-api runs voxflow/api:v1\.2\.4"):
        demo._check_cluster(Cluster())  # type: ignore[arg-type]


def test_demo_step_pauses_before_each_persons_action() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--step"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        input="\n" * 10,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("(press Enter)") == 5


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_keep_leaves_the_bot_and_the_stand_ins_reachable_until_interrupted(
    stop: signal.Signals,
) -> None:
    # Started as from a background shell: SIGINT ignored (SIG_IGN survives exec), so Python's
    # default Ctrl-C handler is never installed and only the demo's own handler can stop it.
    shell = f"trap '' INT; exec {shlex.quote(sys.executable)} -m bot demo --keep"
    with started(
        ["sh", "-c", shell],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    ) as child:
        assert child.stdout is not None
        lines = []
        for line in child.stdout:
            lines.append(line)
            if line.startswith("Send your own signed requests"):
                break
        text = "".join(lines)
        assert "Everything keeps running" in text, text
        health = re.search(r"bot health\s+(\S+)", text)
        kubeconfig = re.search(r"kubectl --kubeconfig (\S+) -n voxflow-prod", text)
        assert health and kubeconfig
        assert httpx.get(health.group(1)).text == "ok"
        got = subprocess.run(
            [
                "kubectl",
                "--kubeconfig",
                kubeconfig.group(1),
                "-n",
                "voxflow-prod",
                "get",
                "deployment",
                "voxflow-api",
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert got.stdout == "voxflow/api:v1.2.3", got.stderr
        child.send_signal(stop)
        assert child.wait(timeout=30) == 0
        assert "stopping" in child.stdout.read()
    with pytest.raises(httpx.ConnectError):
        httpx.get(health.group(1))
