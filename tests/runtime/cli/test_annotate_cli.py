"""tommer-annotate's face: help, progress on a terminal and in logs, Ray missing."""

from __future__ import annotations

import os
import subprocess
import sys

from annotate_helpers import TEXTS, cli, corpus


def test_help_lists_every_option_with_default():
    out = cli("--help")
    assert out.returncode == 0
    for option in ("--model", "--output", "--text-column", "--columns", "--decoding", "--threshold",
                   "--keep-candidates", "--max-tokens", "--window-overlap", "--batch-tokens", "--chunk-rows",
                   "--provider", "--threads", "--host-threads", "--resume", "--overwrite", "--quiet",
                   "--progress-every"):
        assert option in out.stdout, option
    assert "default: 0.5" in out.stdout and "default: 512 on cpu" in out.stdout and "default: 128" in out.stdout


def test_progress_bar_on_a_terminal(tiny_bundle, tmp_path):
    """Under a pseudo-terminal the bar shows rows of the total and tokens/s; the summary follows."""
    import pty

    src = corpus(tmp_path)
    pid, fd = pty.fork()
    if pid == 0:  # child: run the CLI on the terminal
        os.execv(sys.executable, [sys.executable, "-m", "tommer.runtime.cli.annotate", str(src), "--model", str(tiny_bundle),
                                  "--chunk-rows", "2"])
    output = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        output += data
    _, status = os.waitpid(pid, 0)
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode(errors="replace"))  # drop colours
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert f"/{len(TEXTS)} rows" in text and "tokens/s" in text and "annotated 1 file(s)" in text


def test_plain_progress_lines_when_not_on_a_terminal(tiny_bundle, tmp_path):
    """Logs and schedulers get periodic plain lines: rows of the total, tokens, tokens/s, ETA."""
    import re

    out = cli(corpus(tmp_path), "--model", tiny_bundle, "--chunk-rows", "2", "--progress-every", "0")
    assert out.returncode == 0, out.stderr
    lines = [m.groups() for m in re.finditer(r"progress: (\d+)/(\d+) rows \(.*?\), ([\d,]+) tokens, [\d,]+ tokens/s, "
                                             r"elapsed \d:\d\d:\d\d, ETA (\d:\d\d:\d\d|\?)", out.stderr)]
    assert len(lines) >= 4, out.stderr
    rows = [int(r) for r, _, _, _ in lines]
    assert rows == sorted(rows) and rows[-1] == len(TEXTS) and {int(t) for _, t, _, _ in lines} == {len(TEXTS)}
    quiet = cli(corpus(tmp_path), "--model", tiny_bundle, "--overwrite", "-q", "--progress-every", "0")
    assert quiet.returncode == 0 and "progress:" not in quiet.stderr


def test_engine_ray_without_ray_installed(tiny_bundle, tmp_path):
    code = ("import sys; sys.modules['ray'] = None; from tommer.runtime.cli.annotate import main; "
            f"sys.argv = ['tommer-annotate', {str(corpus(tmp_path))!r}, '--model', {str(tiny_bundle)!r}, "
            f"'--engine', 'ray', '--output', {str(tmp_path / 'o')!r}]; main()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 2 and "pip install 'tommer[ray]'" in out.stderr
    assert not (tmp_path / "o").exists()
