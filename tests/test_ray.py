"""The Ray Data engine: same rows as the local engine, and file-level resume."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from tommer.runtime.annotator import Annotator  # noqa: E402
from tommer.runtime.ray_engine import SUCCESS, annotate_files_ray  # noqa: E402

TEXTS = ["John lives in New York City.", None, "", "Marie Curie won the Nobel Prize in 1903.",
         "The Amazon river flows through Brazil, Peru and Colombia. " * 30]


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield
    ray.shutdown()


def write_inputs(folder):
    folder.mkdir()
    for k in range(2):
        texts = TEXTS * (k + 2)
        pq.write_table(pa.table({"id": [f"{k}-{i}" for i in range(len(texts))], "text": texts}),
                       folder / f"part-{k}.parquet", row_group_size=4)


def rows_of(folder):
    files = sorted(p for p in folder.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files]).to_pylist()


def test_ray_engine_equals_local_engine(ray_local, tiny_bundle, tmp_path):
    write_inputs(tmp_path / "in")
    options = dict(max_tokens=64, window_overlap=12)
    summary = annotate_files_ray(tiny_bundle, str(tmp_path / "in"), str(tmp_path / "ray"), columns=["id"],
                                 rows_per_batch=4, workers=2, num_cpus_per_worker=0.5,
                                 options=Annotator.from_bundle(tiny_bundle, **options).options)
    assert summary["files"] == 2 and summary["rows"] == 2 * len(TEXTS) + 3 * len(TEXTS)
    local = Annotator.from_bundle(tiny_bundle, **options)
    for k in range(2):
        src = tmp_path / "in" / f"part-{k}.parquet"
        local.annotate_parquet(src, tmp_path / f"local-{k}.parquet", columns=["id"])
        expected = {r["id"]: r for r in pq.read_table(tmp_path / f"local-{k}.parquet").to_pylist()}
        got = rows_of(tmp_path / "ray" / src.name)
        assert len(got) == len(expected) and {r["id"] for r in got} == set(expected)
        for row in got:
            want = expected[row["id"]]
            assert row["n_tokens"] == want["n_tokens"]
            assert [(m["start"], m["end"], m["text"]) for m in row["mentions"]] == \
                   [(m["start"], m["end"], m["text"]) for m in want["mentions"]]
            for a, b in zip(row["mentions"], want["mentions"]):
                assert abs(a["score"] - b["score"]) <= 1e-6
        assert (tmp_path / "ray" / src.name / SUCCESS).is_file()


def test_ray_resume_skips_complete_files(ray_local, tiny_bundle, tmp_path):
    write_inputs(tmp_path / "in")
    out = tmp_path / "ray"
    first = annotate_files_ray(tiny_bundle, str(tmp_path / "in"), str(out), columns=["id"], num_cpus_per_worker=0.5)
    assert first["files"] == 2
    done = out / "part-0.parquet"
    stamp = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    (out / "part-1.parquet" / SUCCESS).unlink()  # as if the job died while writing part-1
    again = annotate_files_ray(tiny_bundle, str(tmp_path / "in"), str(out), columns=["id"], num_cpus_per_worker=0.5)
    assert (again["files"], again["skipped_files"]) == (1, 1)
    assert {p.name: p.stat().st_mtime_ns for p in done.iterdir()} == stamp, "finished work is not redone"
    assert len(rows_of(out / "part-1.parquet")) == 3 * len(TEXTS), "no row lost or duplicated"


def test_cli_engine_ray(ray_local, tiny_bundle, tmp_path):
    import subprocess
    import sys

    write_inputs(tmp_path / "in")
    args = [sys.executable, "-m", "tommer.runtime.cli", str(tmp_path / "in"), "--model", str(tiny_bundle), "--engine",
            "ray", "--num-cpus-per-worker", "0.5", "--columns", "id"]
    missing = subprocess.run(args, capture_output=True, text=True)
    assert missing.returncode == 2 and "--engine ray needs --output FOLDER" in missing.stderr
    out = subprocess.run(args + ["--output", str(tmp_path / "out")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "annotated 2 file(s) (0 already done) on Ray" in out.stdout
    assert len(rows_of(tmp_path / "out" / "part-0.parquet")) == 2 * len(TEXTS)


def test_gpu_workers_run_the_cuda_provider():
    """--num-gpus-per-worker > 0 selects cuda unless a provider was named."""
    from tommer.runtime.ray_engine import annotate_dataset

    class Recorder:
        def map_batches(self, fn, **kwargs):
            self.kwargs = kwargs
            return self

    auto = annotate_dataset(Recorder(), "b", num_gpus_per_worker=1, provider="auto").kwargs
    assert auto["num_gpus"] == 1 and auto["fn_constructor_kwargs"]["options"]["provider"] == "cuda"
    named = annotate_dataset(Recorder(), "b", num_gpus_per_worker=1, provider="tensorrt").kwargs
    assert named["fn_constructor_kwargs"]["options"]["provider"] == "tensorrt"
    cpu = annotate_dataset(Recorder(), "b", provider="auto").kwargs
    assert cpu["num_gpus"] == 0 and cpu["fn_constructor_kwargs"]["options"]["provider"] == "auto"
