"""The Ray Data engine: one job and one actor pool for every file, the same rows and metadata as the
local engine, exactly once when an actor dies, and the local engine's --resume/--overwrite/--quiet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a local Ray cluster for the module

from tommer.runtime.annotator import Annotator  # noqa: E402
from tommer.runtime.engines.local import annotate_files  # noqa: E402
from tommer.runtime.engines.ray import SUCCESS, _AnnotateBlocks, annotate_files_ray  # noqa: E402
from tommer.runtime.errors import GraphRunError, InputError  # noqa: E402
from tommer.runtime.options import AnnotateOptions, RunOptions  # noqa: E402

TEXTS = ["John lives in New York City.", None, "", "Marie Curie won the Nobel Prize in 1903.",
         "The Amazon river flows through Brazil, Peru and Colombia. " * 30]
OPTIONS = dict(max_tokens=64, window_overlap=12)
NAMES = ["part-0.parquet", "part-1.parquet", "part-2.parquet"]  # part-2 has no rows


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for the module; blocks of a few rows, so that each file is cut into several tasks."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    context = ray.data.DataContext.get_current()
    saved, context.target_max_block_size = context.target_max_block_size, 1024
    yield ray.get_runtime_context().gcs_address
    context.target_max_block_size = saved
    ray.shutdown()


def write_inputs(folder):
    folder.mkdir()
    for k, name in enumerate(NAMES):
        texts = TEXTS * (k + 1) if k < 2 else []
        pq.write_table(pa.table({"id": pa.array([f"{k}-{i}" for i in range(len(texts))], pa.string()),
                                 "text": pa.array(texts, pa.string())}),
                       folder / name, row_group_size=4)
    return folder


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("ray") / "in")


@pytest.fixture(scope="module")
def local_outputs(tiny_bundle, corpus, tmp_path_factory):
    """The local engine's outputs for the same inputs and options: the reference."""
    out = tmp_path_factory.mktemp("local")
    annotate_files(Annotator.from_bundle(tiny_bundle, **OPTIONS), str(corpus), str(out), columns=["id"])
    return out


@pytest.fixture(scope="module")
def ray_job(ray_local, tiny_bundle, corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ray-out") / "out"
    summary = annotate_files_ray(tiny_bundle, str(corpus), str(out), run=RunOptions(columns=["id"], chunk_rows=2), workers=2,
                                 num_cpus_per_worker=0.5, options=Annotator.from_bundle(tiny_bundle, **OPTIONS).options,
                                 quiet=True)
    return summary, out


def parts(folder):
    return sorted(p for p in folder.iterdir() if p.name.startswith("part-"))


def assert_same_as_local(out, local_outputs):
    """Every output folder holds the local engine's rows, in the same order, once; same schema and metadata."""
    for name in NAMES:
        want = pq.read_table(local_outputs / name)
        files = parts(out / name)
        got = pa.concat_tables([pq.read_table(f) for f in files])
        assert got.column("id").to_pylist() == want.column("id").to_pylist(), f"{name}: rows lost, duplicated or moved"
        for a, b in zip(got.to_pylist(), want.to_pylist()):
            assert a["n_tokens"] == b["n_tokens"]
            assert [(m["start"], m["end"], m["text"]) for m in a["mentions"]] == \
                   [(m["start"], m["end"], m["text"]) for m in b["mentions"]]
            assert all(abs(x["score"] - y["score"]) <= 1e-6 for x, y in zip(a["mentions"], b["mentions"]))
        for f in files:  # the same column types and the same tommer metadata, whole
            schema = pq.read_schema(f)
            assert schema.remove_metadata() == want.schema.remove_metadata()
            assert json.loads(schema.metadata[b"tommer"]) == json.loads(want.schema.metadata[b"tommer"])
        marker = json.loads((out / name / SUCCESS).read_text())
        assert marker["rows"] == want.num_rows


def test_ray_engine_equals_local_engine(ray_job, local_outputs):
    summary, out = ray_job
    assert (summary.files, summary.skipped_files) == (3, 0)
    assert summary.written == [str(out / name) for name in NAMES]
    tables = [pq.read_table(local_outputs / name) for name in NAMES]
    assert summary.stats.rows == sum(t.num_rows for t in tables) == 3 * len(TEXTS)
    assert summary.stats.tokens == sum(sum(t.column("n_tokens").to_pylist()) for t in tables)
    assert summary.stats.mentions == sum(len(m) for t in tables for m in t.column("mentions").to_pylist()) > 0
    assert len(parts(out / "part-1.parquet")) > 1, "small blocks: a file is written by several tasks"
    assert_same_as_local(out, local_outputs)
    meta = json.loads(pq.read_schema(parts(out / "part-0.parquet")[0]).metadata[b"tommer"])
    assert meta["max_tokens"] == 64 and meta["window_overlap"] == 12 and meta["source"].endswith("part-0.parquet")


def test_existing_outputs_are_refused_without_resume_or_overwrite(ray_job, tiny_bundle, corpus, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ray_job[1], out)
    (out / "part-1.parquet" / SUCCESS).unlink()  # as if the job had stopped while writing part-1
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    with pytest.raises(InputError) as info:
        annotate_files_ray(tiny_bundle, str(corpus), str(out), run=RunOptions(columns=["id"]))
    message = str(info.value)
    assert f"{out / 'part-0.parquet'} already exists: pass --overwrite to replace it or --resume to keep it" in message
    assert f"{out / 'part-1.parquet'}: an interrupted run left an incomplete output (no _SUCCESS)" in message
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before, "nothing removed without asking"
    with pytest.raises(InputError, match="--overwrite and --resume exclude each other"):
        annotate_files_ray(tiny_bundle, str(corpus), str(out), run=RunOptions(resume=True, overwrite=True))


def test_columns_are_checked_before_ray_runs(tiny_bundle, corpus, tmp_path):
    with pytest.raises(InputError) as info:
        annotate_files_ray(tiny_bundle, str(corpus), str(tmp_path / "out"), run=RunOptions(columns=["id", "nope"]))
    assert f"{corpus / 'part-0.parquet'}: --columns names ['nope'] which the file lacks; columns: id, text" in str(info.value)
    odd = tmp_path / "odd"
    odd.mkdir()
    pq.write_table(pa.table({"id": [1], "text": ["a"], "mentions": [2], "path": ["x"]}), odd / "a.parquet")
    pq.write_table(pa.table({"id": ["1"], "text": ["b"]}), odd / "b.parquet")
    with pytest.raises(InputError) as info:
        annotate_files_ray(tiny_bundle, str(odd), str(tmp_path / "out"))
    message = str(info.value)
    assert "a.parquet: input columns ['mentions'] would be overwritten by the output" in message
    with pytest.raises(InputError) as info:
        annotate_files_ray(tiny_bundle, str(odd), str(tmp_path / "out"), run=RunOptions(columns=["id", "path"]))
    assert "a.parquet: column 'path' clashes with the column --engine ray adds" in str(info.value)
    with pytest.raises(InputError) as info:
        annotate_files_ray(tiny_bundle, str(odd), str(tmp_path / "out"), run=RunOptions(columns=["id"]))
    assert "b.parquet: --engine ray reads every input as one dataset" in str(info.value)
    assert "(id: int64, text: string)" in str(info.value) and "(id: string, text: string)" in str(info.value)
    assert not (tmp_path / "out").exists(), "nothing written"


def dying_actor(marker, victim):
    """An annotator actor that kills its own process, once, on the block holding row ``victim``."""

    class Dying(_AnnotateBlocks):
        def __call__(self, batch):
            if victim in batch.column("id").to_pylist() and not os.path.exists(marker):
                open(marker, "w").close()
                os._exit(1)
            return super().__call__(batch)

    return Dying


def test_overwrite_redoes_every_file_exactly_once_when_an_actor_dies(ray_job, tiny_bundle, corpus, local_outputs,
                                                                    tmp_path):
    out = tmp_path / "out"
    shutil.copytree(ray_job[1], out)
    stale = out / "part-0.parquet" / "part-99999999.parquet"
    shutil.copy(parts(out / "part-0.parquet")[0], stale)  # rows that would be duplicated if kept
    marker = tmp_path / "died"
    summary = annotate_files_ray(tiny_bundle, str(corpus), str(out),
                                 run=RunOptions(columns=["id"], chunk_rows=2, overwrite=True), num_cpus_per_worker=0.5,
                                 options=Annotator.from_bundle(tiny_bundle, **OPTIONS).options,
                                 actor=dying_actor(str(marker), "1-7"))
    assert marker.exists(), "the actor died mid-job"
    assert (summary.files, summary.skipped_files, summary.stats.rows) == (3, 0, 3 * len(TEXTS))
    assert not stale.exists(), "--overwrite redoes the whole folder"
    assert_same_as_local(out, local_outputs)
    # part-0 was marked complete while the job went on (the ledger), not at its end
    assert (out / "part-0.parquet" / SUCCESS).stat().st_mtime_ns < parts(out / "part-1.parquet")[-1].stat().st_mtime_ns


def test_cli_resume_quiet(ray_local, ray_job, tiny_bundle, corpus, local_outputs, tmp_path):
    """--resume keeps complete folders and redoes the others; --quiet: the summary line only, no progress."""
    out = tmp_path / "out"
    shutil.copytree(ray_job[1], out)
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "part-0.parquet").iterdir()}
    (out / "part-1.parquet" / SUCCESS).unlink()  # as if the job had stopped while writing part-1
    shutil.copy(parts(out / "part-1.parquet")[0], out / "part-1.parquet" / "part-99999999.parquet")
    args = [sys.executable, "-m", "tommer.runtime.cli.annotate", str(corpus), "--model", str(tiny_bundle), "--engine", "ray",
            "--num-cpus-per-worker", "0.5", "--columns", "id", "--max-tokens", "64", "--window-overlap", "12"]
    missing = subprocess.run(args, capture_output=True, text=True)
    assert missing.returncode == 2 and "--engine ray needs --output FOLDER" in missing.stderr
    run = subprocess.run(args + ["--output", str(out), "--resume", "--quiet", "--ray-address", ray_local],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("annotated 1 file(s) (2 already done) on Ray: 10 rows, ")
    lines = run.stdout.splitlines()
    assert lines[1:] == [f"wrote {out / 'part-1.parquet'}", f"kept {out / 'part-0.parquet'} (finished before the resume)",
                         f"kept {out / 'part-2.parquet'} (finished before the resume)"], run.stdout
    assert "Running Dataset" not in run.stderr and "Progress" not in run.stderr and "finished" not in run.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (out / "part-0.parquet").iterdir()} == kept, "finished work kept"
    assert_same_as_local(out, local_outputs)
    # an input changed since its complete output was written: resuming would mix two versions
    changed = tmp_path / "in"
    shutil.copytree(corpus, changed)
    pq.write_table(pa.table({"id": ["x"], "text": ["changed"]}), changed / "part-0.parquet")
    with pytest.raises(InputError, match=r"part-0.parquet: the input changed since .*was written"):
        annotate_files_ray(tiny_bundle, str(changed), str(out), run=RunOptions(columns=["id"], resume=True),
                           options=AnnotateOptions(**OPTIONS))
    # other options than the run that wrote the complete folders: refused, naming the flag and both values
    with pytest.raises(InputError, match=r"part-0.parquet: cannot resume, the run that wrote it used --threshold 0.5 "
                                         r"\(now 0.7\)"):
        annotate_files_ray(tiny_bundle, str(corpus), str(out), run=RunOptions(columns=["id"], resume=True),
                           options=AnnotateOptions(**OPTIONS, threshold=0.7))


def test_quiet_turns_ray_data_progress_off_for_the_job_only(ray_local):
    import logging

    from tommer.runtime.engines.ray import _settings

    context = ray.data.DataContext.get_current()
    before = (context.enable_progress_bars, context.print_on_execution_start, logging.getLogger("ray.data").level)
    with _settings(ray, quiet=False):
        assert context.enable_progress_bars and context.execution_options.preserve_order
    with _settings(ray, quiet=True):
        assert not context.enable_progress_bars and not context.print_on_execution_start
        assert logging.getLogger("ray.data").level >= logging.WARNING
    assert (context.enable_progress_bars, context.print_on_execution_start,
            logging.getLogger("ray.data").level) == before, "the caller's settings are restored"


def test_gpu_workers_run_the_cuda_provider():
    """--num-gpus-per-worker > 0 selects cuda unless a provider was named."""
    from tommer.runtime.engines.ray import annotate_dataset

    class Recorder:
        def map_batches(self, fn, **kwargs):
            self.kwargs = kwargs
            return self

    auto = annotate_dataset(Recorder(), "b", num_gpus_per_worker=1, provider="auto").kwargs
    assert auto["num_gpus"] == 1 and auto["fn_constructor_kwargs"]["options"]["provider"] == "cuda"
    named = annotate_dataset(Recorder(), "b", num_gpus_per_worker=1, provider="tensorrt").kwargs
    assert named["fn_constructor_kwargs"]["options"]["provider"] == "tensorrt"
    cpu = annotate_dataset(Recorder(), "b", provider="auto", workers=3).kwargs
    assert cpu["num_gpus"] == 0 and cpu["fn_constructor_kwargs"]["options"]["provider"] == "auto"
    assert cpu["compute"].min_size == cpu["compute"].max_size == 3, "one pool of --num-workers actors"
    # an actor's graph runs on the CPUs Ray reserved for it (all cores of the node would oversubscribe it)
    assert cpu["num_cpus"] == 1 and cpu["fn_constructor_kwargs"]["options"]["threads"] == 1
    four = annotate_dataset(Recorder(), "b", num_cpus_per_worker=4.5).kwargs
    assert four["fn_constructor_kwargs"]["options"]["threads"] == 4
    asked = annotate_dataset(Recorder(), "b", num_cpus_per_worker=2, threads=6).kwargs
    assert asked["fn_constructor_kwargs"]["options"]["threads"] == 6


def test_a_block_that_kills_every_actor_fails_the_job_after_the_retries(ray_local, tiny_bundle, corpus, tmp_path):
    """Ray Data retries a lost actor's block without end by default: a block that crashes every
    actor it reaches would loop forever. tommer bounds the retries and says what happened."""
    count = tmp_path / "deaths"

    class AlwaysDying(_AnnotateBlocks):
        def __call__(self, batch):  # dies on the block twice; a third try (unbounded retries) would pass
            died = count.read_text() if count.exists() else ""
            if "1-7" in batch.column("id").to_pylist() and len(died) < 2:
                with open(count, "a") as fh:
                    fh.write("x")
                os._exit(1)
            return super().__call__(batch)

    out = tmp_path / "out"
    with pytest.raises(GraphRunError) as info:
        annotate_files_ray(tiny_bundle, str(corpus), str(out), run=RunOptions(columns=["id"], chunk_rows=2),
                           num_cpus_per_worker=0.5, options=Annotator.from_bundle(tiny_bundle, **OPTIONS).options,
                           task_retries=1, quiet=True, actor=AlwaysDying)
    assert count.read_text() == "xx", "the block ran once, then was retried once"
    message = str(info.value)
    assert "lost on the same block 2 time(s)" in message and "--ray-task-retries 1" in message
    assert not (out / "part-1.parquet" / SUCCESS).exists(), "the file with the failing block is not marked complete"
