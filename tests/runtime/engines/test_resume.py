"""A resume never mixes two runs: finished outputs and unfinished parts are checked alike."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from annotate_helpers import TEXTS, cli, corpus

from tommer.runtime.annotator import Annotator
from tommer.runtime.errors import InputError


def _two_files(tmp_path):
    src = tmp_path / "multi"
    src.mkdir()
    corpus(src, name="a.parquet")
    corpus(src, texts=list(reversed(TEXTS)), name="b.parquet")
    return src


@pytest.mark.parametrize("option,first,second,flag", [
    ("threshold", 0.5, 0.7, r"--threshold 0.5 \(now 0.7\)"),
    ("decoding", "threshold", "greedy", r"--decoding threshold \(now greedy\)"),
])
def test_a_finished_output_made_with_other_options_is_not_kept(tiny_bundle, tmp_path, option, first, second, flag):
    src, out = _two_files(tmp_path), tmp_path / "out"
    Annotator.from_bundle(tiny_bundle, **{option: first}).annotate_parquet(src / "a.parquet", out / "a.parquet")
    again = Annotator.from_bundle(tiny_bundle, **{option: second})
    with pytest.raises(InputError, match=rf"a.parquet: cannot resume, the run that wrote it used {flag}"):
        again.annotate_parquet(src, out, resume=True)
    assert not (out / "b.parquet").exists(), "nothing written when refused"
    summary = Annotator.from_bundle(tiny_bundle, **{option: first}).annotate_parquet(src, out, resume=True)
    assert (summary.files, summary.skipped_files) == (1, 1)
    assert summary.kept == [str(out / "a.parquet")] and summary.written == [str(out / "b.parquet")]


def test_a_finished_output_of_another_bundle_is_not_kept(tiny_bundle, tiny_trt_bundle, tmp_path):
    src, out = _two_files(tmp_path), tmp_path / "out"
    Annotator.from_bundle(tiny_bundle).annotate_parquet(src / "a.parquet", out / "a.parquet")
    other = Annotator.from_bundle(tiny_trt_bundle, provider="cpu")
    assert other.manifest.bundle_id != Annotator.from_bundle(tiny_bundle).manifest.bundle_id
    with pytest.raises(InputError, match=r"a.parquet: cannot resume, the run that wrote it used --model \(bundle id\)"):
        other.annotate_parquet(src, out, resume=True)


def test_the_cli_resume_over_a_folder_names_the_option_and_both_values(tiny_bundle, tmp_path):
    src, out = _two_files(tmp_path), tmp_path / "out"
    done = cli(src / "a.parquet", "-m", tiny_bundle, "-o", out / "a.parquet", "-q")
    assert done.returncode == 0, done.stderr
    refused = cli(src, "-m", tiny_bundle, "-o", out, "--resume", "--threshold", "0.7", "-q")
    assert refused.returncode == 2
    assert "--threshold 0.5 (now 0.7)" in refused.stderr and "a.parquet" in refused.stderr
    assert not (out / "b.parquet").exists()
    assert pq.read_table(out / "a.parquet").num_rows == len(TEXTS)
