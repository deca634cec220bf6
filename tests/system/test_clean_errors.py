"""Hostile or broken files give one clean line, never a traceback: a deeply nested TOML array (check, and a
SIGHUP reload, which is refused, counted, and followed by READY=1), a non-UTF-8 standalone relay/ingress file,
init/join into a directory that cannot be created."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.system.conftest import wiregate

DEEP = "a = " + "[" * 3000 + "]" * 3000 + "\n"


def one_line_error(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    return line


def test_check_of_a_deeply_nested_toml_array_is_one_line(tmp_path):
    f = tmp_path / "deep.toml"
    f.write_text(DEEP)
    assert one_line_error(wiregate("check", str(f))) == f"wiregate: error: {f}: not valid TOML: arrays or tables " \
        "nested too deeply"


def test_non_utf8_and_deeply_nested_standalone_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"listeners": [\xff]}')
    assert one_line_error(wiregate("ingress", str(bad))) == f"wiregate: error: {bad}: not UTF-8 text (byte 15)"
    r = subprocess.run([sys.executable, "-m", "wiregate.relay", "--config", str(bad), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert one_line_error(r) == f"wiregate relay: error: {bad}: not UTF-8 text (byte 15)"
    deep = tmp_path / "deep.toml"
    deep.write_text(DEEP)
    r = subprocess.run([sys.executable, "-m", "wiregate.relay", "--config", str(deep), "--check"],
                       capture_output=True, text=True, timeout=60)
    assert one_line_error(r) == f"wiregate relay: error: {deep}: not valid TOML: nested too deeply"


def test_init_and_join_into_a_directory_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    target = tmp_path / "file" / "wiregate"
    line = one_line_error(wiregate("init", "gateway", "--endpoint", "203.0.113.1", "--config-dir", str(target)))
    assert line == f"wiregate: error: {target}: cannot create the directory (Not a directory)"
    gw = tmp_path / "gw"
    assert wiregate("init", "gateway", "--endpoint", "203.0.113.1", "--config-dir", str(gw)).returncode == 0
    r = wiregate("site", "add", "home", "--config-dir", str(gw))
    assert r.returncode == 0, r.stderr
    token = next(w for w in r.stdout.split() if w.startswith("wg"))
    line = one_line_error(wiregate("join", token, "--config-dir", str(target)))
    assert line == f"wiregate: error: {target}: cannot create the directory (Not a directory)"


async def test_a_reload_of_a_deeply_nested_file_is_refused_counted_and_followed_by_ready(home_file, tmp_path,
                                                                                         monkeypatch):
    from wiregate.runner import Node

    node = Node(home_file)
    good = home_file.read_text()
    home_file.write_text(good + DEEP)
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        s.setblocking(False)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert await node.reload() is False  # before: RecursionError out of the SIGHUP task
        got = [s.recv(4096).decode() for _ in range(2)]
    assert got[0].startswith("RELOADING=1\n")
    assert got[1].startswith("READY=1\nSTATUS=reload refused: ") and "nested too deeply" in got[1]
    assert node.reloads == {"ok": 0, "refused": 1}
