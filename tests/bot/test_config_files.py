"""Whatever is handed to the bot as its config file, it answers exit 2 and one named line.

Control characters anywhere, special files (devices, FIFOs, sockets), files that never end:
the bot reads at most the size limit, never blocks, and never shows a traceback.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

import pytest

from bot.__main__ import main
from bot.config import load_config
from bot.config_file import ConfigError

EXAMPLE = Path(__file__).parents[2] / "examples" / "voxflow.yml"

# Every C0 control but NUL (a binary file, refused as such), tab, line feed and carriage return;
# DEL; and the C1 controls but NEL: what YAML 1.1 does not allow in a stream.
CONTROLS = (
    [c for c in range(0x01, 0x20) if c not in (0x09, 0x0A, 0x0D)]
    + [0x7F]
    + [c for c in range(0x80, 0xA0) if c != 0x85]
)


def check_config_lines(path: Path | str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Run `check-config` in this process; assert exit 2, no traceback; return stderr's lines."""
    assert main(["check-config", str(path)]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err.strip().splitlines()


@pytest.mark.parametrize("code", CONTROLS, ids=lambda c: f"U+{c:04X}")
def test_a_control_character_is_refused_with_its_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], code: int
) -> None:
    text = EXAMPLE.read_text()
    lines = text.splitlines(keepends=True)
    # In the middle of the tenth line's value: neither at a line start nor in a comment.
    lines[9] = lines[9][:-1] + chr(code) + "\n"
    path = tmp_path / "control.yml"
    path.write_text("".join(lines), encoding="utf-8")
    (line,) = check_config_lines(path, capsys)
    column = len(lines[9]) - 1
    assert line == (
        f"{path}: line 10, column {column}: control character U+{code:04X} "
        "is not allowed in YAML; remove it"
    )


@pytest.mark.parametrize("where", ["key", "comment", "quoted", "first byte", "last byte"])
def test_a_control_character_is_refused_wherever_it_stands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    bell = "\x07"
    text = {
        "key": f"environ{bell}ments: {{}}\n",
        "comment": f"# a note {bell}\nenvironments: {{}}\n",
        "quoted": f'environments: {{prod: "{bell}"}}\n',
        "first byte": f"{bell}environments: {{}}\n",
        "last byte": f"environments: {{}}\n{bell}",
    }[where]
    path = tmp_path / "bell.yml"
    path.write_text(text, encoding="utf-8")
    (line,) = check_config_lines(path, capsys)
    assert "control character U+0007" in line and line.startswith(f"{path}: line ")


def test_a_device_that_never_ends_is_refused_without_reading_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    (line,) = check_config_lines("/dev/zero", capsys)
    assert line == "/dev/zero: is a character device, not a regular file; refused"


def test_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "config.yml"
    os.mkfifo(fifo)
    done = threading.Event()
    lines: list[str] = []

    def check() -> None:
        lines.extend(check_config_lines(fifo, capsys))
        done.set()

    checker = threading.Thread(target=check, daemon=True)
    checker.start()
    if not done.wait(timeout=30):
        # Unblock the reader so the thread ends, then fail: the bot waited on the FIFO.
        with open(fifo, "w"):
            pass
        pytest.fail("check-config blocked on a FIFO")
    assert lines == [f"{fifo}: is a named pipe (FIFO), not a regular file; refused"]


def test_a_socket_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        (line,) = check_config_lines(path, capsys)
    assert line == f"{path}: is a socket, not a regular file; refused"


def test_a_link_to_a_regular_file_is_read_as_kubernetes_mounts_a_config_map(
    tmp_path: Path,
) -> None:
    # A ConfigMap volume's file is a symlink into a ..data directory of the real files.
    real = tmp_path / "..data" / "rollback.yml"
    real.parent.mkdir()
    real.write_text(EXAMPLE.read_text())
    link = tmp_path / "rollback.yml"
    link.symlink_to(real)
    assert set(load_config(link).environments) == set(load_config(EXAMPLE).environments)


def test_mutated_example_files_are_loaded_or_refused_never_crash(tmp_path: Path) -> None:
    """A seeded fuzz over the example: inserted control and odd bytes, deletions, duplications."""
    original = EXAMPLE.read_bytes()
    alphabet = [bytes([c]) for c in range(0x00, 0x20)] + [
        b"\x7f",
        b"\xc2\x85",
        b"\xc2\x9b",
        b"\xef\xbb\xbf",
        b"\xff",
        b"\xe2\x80\xa8",
        b":",
        b"&a",
        b"*a",
        b"!!python/object",
        b"{",
        b"[",
        b'"',
        b"'",
        b"\t",
    ]
    rng = random.Random(20261207)
    path = tmp_path / "fuzz.yml"
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(400):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(data))
            action = rng.choice(("insert", "delete", "duplicate"))
            if action == "insert":
                data[at:at] = rng.choice(alphabet)
            elif action == "delete":
                del data[at : at + rng.randint(1, 8)]
            else:
                data[at:at] = data[at : at + rng.randint(1, 40)]
        path.write_bytes(bytes(data))
        problems: list[str] | None = None
        try:
            load_config(path, environ={})
        except ConfigError as exc:
            problems = exc.problems
        if problems is None:
            outcomes["loaded"] += 1
            continue
        assert problems and all(p and "\n" not in p for p in problems)
        outcomes["refused"] += 1
    # The fuzz reached both outcomes: mutations the parser survives and ones it refuses.
    assert outcomes["refused"] > 0 and outcomes["loaded"] > 0
