"""Resume after kill -9, a torn part, a changed input, and after a signal: exactly once, nothing mixed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from annotate_helpers import TEXTS, cli, corpus, interrupted_run, kill_corpus

from tommer.runtime.annotator import Annotator
from tommer.runtime.errors import InputError


@pytest.mark.slow
def test_repeated_kill_9_then_resume_is_exactly_once(tiny_bundle, tmp_path):
    """kill -9 at random moments, again and again, over a folder of files; --resume equals one clean run."""
    import random

    src = kill_corpus(tmp_path / "in")
    args = ["--model", tiny_bundle, "--chunk-rows", "40", "--columns", "id", "--host-threads", "2"]
    assert cli(src, *args, "--output", tmp_path / "whole").returncode == 0
    target = tmp_path / "resumed"
    command = [sys.executable, "-m", "tommer.runtime.cli.annotate", str(src), *map(str, args), "--output", str(target), "--resume"]
    chunks = {f"f{k}.parquet": -(-n // 40) for k, n in enumerate((700, 500, 900))}

    def progress() -> int:  # chunks finished over all files: whole outputs and parts
        whole = sum(chunks[p.name] for p in target.glob("*.parquet")) if target.exists() else 0
        return whole + (len(list(target.glob(".*.parts/part-*.parquet"))) if target.exists() else 0)

    rng, killed, seen = random.Random(13), 0, []
    targets = [0] + sorted(rng.sample(range(2, sum(chunks.values()) - 1), 6))  # 0: killed while starting
    for goal in targets:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while proc.poll() is None and progress() < goal and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15) if goal else 0.5)  # anywhere: reading, inferring, writing, joining
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        seen.append(progress())
    assert killed >= 5, f"only {killed} of {len(targets)} runs were killed mid-way (progress {seen})"
    assert len(set(seen)) >= 4, f"the kills did not land at different points: {seen}"
    leftover = list(target.glob(".*.parts")) if target.exists() else []
    if leftover:  # an interrupted run is refused unless resumed, and resumed only with the same options
        again = cli(src, *args, "--output", target)
        assert again.returncode == 2 and "interrupted run left finished parts: pass --resume" in again.stderr
        other = cli(src, *args, "--output", target, "--resume", "--threshold", "0.7")
        assert other.returncode == 2 and "the interrupted run used --threshold 0.5 (now 0.7)" in other.stderr
    resumed = cli(src, *args, "--output", target, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    for name in ("f0.parquet", "f1.parquet", "f2.parquet"):
        got, expected = pq.read_table(target / name), pq.read_table(tmp_path / "whole" / name)
        assert got.num_rows == expected.num_rows
        assert got.to_pylist() == expected.to_pylist(), f"{name} differs from the uninterrupted run"
        assert got.schema.metadata == expected.schema.metadata
    assert not [p for p in target.iterdir() if p.name.startswith(".")], "no parts or temporary files left"
    skipped = cli(src, *args, "--output", target, "--resume")
    assert skipped.returncode == 0 and "3 already done" in skipped.stdout


@pytest.mark.slow
def test_resume_after_a_kill_between_output_rename_and_cleanup(tiny_bundle, tmp_path):
    """The output is renamed into place before its parts folder is removed: a kill in between is harmless."""
    src = corpus(tmp_path)
    out = tmp_path / "out.parquet"
    assert cli(src, "--model", tiny_bundle, "--output", out, "--chunk-rows", "3").returncode == 0
    expected = pq.read_table(out)
    parts = tmp_path / ".out.parquet.parts"
    parts.mkdir()
    pq.write_table(expected.slice(0, 3), parts / "part-000000.parquet")  # what the kill left
    resumed = cli(src, "--model", tiny_bundle, "--output", out, "--chunk-rows", "3", "--resume")
    assert resumed.returncode == 0 and "1 already done" in resumed.stdout, resumed.stderr
    assert not parts.exists() and pq.read_table(out).equals(expected)


def test_resume_redoes_a_part_that_is_not_whole(tmp_path):
    """A part that cannot be read, or has more rows than a chunk, is redone with every later part."""
    from tommer.runtime.engines.local import PartStore

    table = pa.table({"id": range(8)})
    store = PartStore(tmp_path / "out.parquet", {"chunk_rows": 3})
    store.folder.mkdir()
    pq.write_table(table.slice(0, 3), store.folder / "part-000000.parquet")
    (store.folder / "part-000001.parquet").write_bytes(b"not parquet")
    pq.write_table(table.slice(6, 2), store.folder / "part-000002.parquet")
    assert store.finished_parts() == 1
    pq.write_table(table.slice(3, 4), store.folder / "part-000001.parquet")
    assert store.finished_parts() == 1, "a part with more rows than a chunk is not whole"
    pq.write_table(table.slice(3, 3), store.folder / "part-000001.parquet")
    assert store.finished_parts() == 3


def test_resume_refuses_a_changed_input_naming_it(tiny_bundle, tmp_path):
    """Size or footer hash changed since the parts (or the output) were written: refused; a touch alone is not
    a change (only the modification time moved): the resume goes on."""
    annotator = Annotator.from_bundle(tiny_bundle)
    src, out = corpus(tmp_path), tmp_path / "out.parquet"
    interrupted_run(annotator, src, out)
    corpus(tmp_path, texts=[t.upper() if t else t for t in TEXTS])  # same rows, other texts
    with pytest.raises(InputError, match=r"corpus.parquet: the input changed since the interrupted run started "
                                         r"\(.*footer_sha256.*\).*--overwrite"):
        annotator.annotate_parquet(src, out, chunk_rows=3, resume=True)
    assert not out.exists(), "nothing written when refused"
    with pytest.raises(InputError, match=r"the interrupted run used --chunk-rows 3 \(now 4\): pass the same values"):
        annotator.annotate_parquet(src, out, chunk_rows=4, resume=True)
    annotator.annotate_parquet(src, out, chunk_rows=3, overwrite=True)
    before = pq.read_table(out)
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))  # touched: only the time changed
    summary = annotator.annotate_parquet(src, out, chunk_rows=3, resume=True)  # the same file: kept
    assert (summary.files, summary.skipped_files) == (0, 1)
    assert pq.read_table(out).equals(before)
    interrupted_run(annotator, src, tmp_path / "again.parquet")
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))  # touched between interrupt and resume
    annotator.annotate_parquet(src, tmp_path / "again.parquet", chunk_rows=3, resume=True)
    assert pq.read_table(tmp_path / "again.parquet").equals(before)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_cleanly_keeps_parts_and_says_how_to_resume(tiny_bundle, tmp_path, signum):
    """Ctrl-C (SIGINT) and SIGTERM: threads stopped in order, parts kept, exit 130/143, resume finishes."""
    rng = np.random.default_rng(1)
    words = ["Paris", "London", "the", "river", "Obama", "visited", "in", "1903"]
    src = corpus(tmp_path, texts=[" ".join(rng.choice(words, size=150)) for _ in range(40)], row_group_size=16)
    out = tmp_path / "out.parquet"
    args = [src, "--model", tiny_bundle, "--output", out, "--chunk-rows", "2", "-q"]
    proc = subprocess.Popen([sys.executable, "-m", "tommer.runtime.cli.annotate", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    parts = tmp_path / ".out.parquet.parts"
    deadline = time.time() + 60
    while time.time() < deadline and not list(parts.glob("part-*.parquet")):
        time.sleep(0.02)
    proc.send_signal(signum)
    sent = time.perf_counter()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert time.perf_counter() - sent < 10, "stopping waited for more than the work in hand"
    assert "terminate called" not in err and "Traceback" not in err, err
    assert f"interrupted by {signal.Signals(signum).name}: stopped cleanly" in err
    kept = len(list(parts.glob("part-*.parquet")))
    assert 1 <= kept < 20 and f"{kept} finished part(s) of 2 rows kept" in err, err
    assert "--resume" in err.splitlines()[-1] and not out.exists()
    resumed = cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"{40 - 2 * kept} rows (+{2 * kept} rows finished before the resume)" in resumed.stdout
    assert pq.read_table(out).column("id").to_pylist() == list(range(40))
