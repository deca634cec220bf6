import subprocess
import sys

from wiregate import __version__
from wiregate.cli.main import main


def test_version_flag_prints_version(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert __version__ in capsys.readouterr().out


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "wiregate", "--help"], capture_output=True, text=True, check=True)
    assert "usage: wiregate" in out.stdout
    assert "bench" in out.stdout


def test_unknown_bench_part_is_a_clean_error():
    r = subprocess.run([sys.executable, "-m", "wiregate", "bench", "nope"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "invalid choice" in r.stderr and "Traceback" not in r.stderr
