"""Output names: outputs are Parquet, a name that is not is an error saying what to pass, and every summary
names the files written or kept; several sources (an unquoted glob the shell expanded) are one input set."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from annotate_helpers import TEXTS, cli, corpus

from tommer.runtime.annotator import Annotator
from tommer.runtime.errors import InputError
from tommer.runtime.io.inputs import output_paths, resolve_inputs


def wrote(stdout: str) -> list[str]:
    return [line.removeprefix("wrote ") for line in stdout.splitlines() if line.startswith("wrote ")]


@pytest.mark.parametrize("name,suggested", [("result.jsonl", "result"), ("result.csv", "result"),
                                            ("result", "result"), ("out/result.json.gz", "out/result")])
def test_one_input_with_an_output_that_is_not_parquet_is_an_error(tiny_bundle, tmp_path, name, suggested):
    src = corpus(tmp_path)
    out = cli(src, "--model", tiny_bundle, "--output", tmp_path / name, "-q")
    assert out.returncode == 2, out.stdout
    assert f"--output {tmp_path / name}: outputs are Parquet" in out.stderr
    assert f"--output {tmp_path / suggested}.parquet" in out.stderr
    assert f"--output {tmp_path / suggested}/ writes {tmp_path / suggested}/corpus.parquet" in out.stderr
    assert not (tmp_path / name).exists(), "nothing created"


def test_one_input_into_a_folder_and_every_summary_names_what_it_wrote(tiny_bundle, tmp_path):
    src = corpus(tmp_path)
    default = cli(src, "--model", tiny_bundle, "-q")
    assert default.returncode == 0, default.stderr
    assert wrote(default.stdout) == [str(tmp_path / "corpus.mentions.parquet")]
    named = cli(src, "--model", tiny_bundle, "--output", tmp_path / "one.parquet", "-q")
    assert wrote(named.stdout) == [str(tmp_path / "one.parquet")]
    slash = cli(src, "--model", tiny_bundle, "--output", f"{tmp_path / 'res'}/", "-q")
    assert slash.returncode == 0, slash.stderr
    assert wrote(slash.stdout) == [str(tmp_path / "res" / "corpus.parquet")]
    assert pq.read_table(tmp_path / "res" / "corpus.parquet").num_rows == len(TEXTS)
    (tmp_path / "existing").mkdir()
    folder = cli(src, "--model", tiny_bundle, "--output", tmp_path / "existing", "-q")  # a folder that exists
    assert folder.returncode == 0, folder.stderr
    assert wrote(folder.stdout) == [str(tmp_path / "existing" / "corpus.parquet")]


def _folder(tmp_path):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    corpus(src, name="a.parquet")
    corpus(src / "sub", texts=TEXTS[:3], name="b.parquet")
    return src


def test_a_folder_of_inputs_names_each_output_and_a_resume_names_what_it_kept(tiny_bundle, tmp_path):
    src, out = _folder(tmp_path), tmp_path / "out"
    first = cli(src / "a.parquet", "--model", tiny_bundle, "--output", out / "a.parquet", "-q")
    assert wrote(first.stdout) == [str(out / "a.parquet")]
    resumed = cli(src, "--model", tiny_bundle, "--output", out, "--resume", "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert wrote(resumed.stdout) == [str(out / "sub" / "b.parquet")]
    assert f"kept {out / 'a.parquet'} (finished before the resume)" in resumed.stdout
    again = cli(src, "--model", tiny_bundle, "--output", out, "--overwrite", "-q")
    assert wrote(again.stdout) == [str(out / "a.parquet"), str(out / "sub" / "b.parquet")]


def test_a_folder_of_inputs_with_a_file_name_for_output_is_an_error(tiny_bundle, tmp_path):
    src = _folder(tmp_path)
    out = cli(src, "--model", tiny_bundle, "--output", tmp_path / "mentions.jsonl", "-q")
    assert out.returncode == 2 and "looks like a file name" in out.stderr
    assert f"--output {tmp_path / 'mentions'}/" in out.stderr and not (tmp_path / "mentions.jsonl").exists()
    one = cli(src, "--model", tiny_bundle, "--output", tmp_path / "m.parquet", "-q")
    assert one.returncode == 2 and "names one Parquet file, but there are 2 input files" in one.stderr


def test_several_sources_are_one_input_set_like_a_quoted_glob(tiny_bundle, tmp_path):
    """``tommer-annotate in/*.parquet`` unquoted: the shell passes several names; they are annotated as the
    quoted glob would be, with relative names under the output folder."""
    src = _folder(tmp_path)
    listed = cli(src / "a.parquet", src / "sub" / "b.parquet", "--model", tiny_bundle, "--output",
                 tmp_path / "listed", "-q")
    assert listed.returncode == 0, listed.stderr
    assert wrote(listed.stdout) == [str(tmp_path / "listed" / "a.parquet"),
                                    str(tmp_path / "listed" / "sub" / "b.parquet")]
    globbed = cli(str(src / "**" / "*.parquet"), "--model", tiny_bundle, "--output", tmp_path / "globbed", "-q")
    assert globbed.returncode == 0, globbed.stderr
    for name in ("a.parquet", "sub/b.parquet"):
        assert pq.read_table(tmp_path / "listed" / name).equals(pq.read_table(tmp_path / "globbed" / name))
    nowhere = cli(src / "a.parquet", src / "sub" / "b.parquet", "--model", tiny_bundle, "-q")
    assert nowhere.returncode == 2 and "several input files: pass --output FOLDER/" in nowhere.stderr
    missing = cli(src / "a.parquet", tmp_path / "x.jsonl", "--model", tiny_bundle, "--output", tmp_path / "o", "-q")
    assert missing.returncode == 2 and f"{tmp_path / 'x.jsonl'}: does not exist" in missing.stderr


def test_the_input_rules_in_python(tiny_bundle, tmp_path):
    src = _folder(tmp_path)
    files, root = resolve_inputs([str(src / "sub" / "b.parquet"), str(src / "a.parquet"), str(src / "a.parquet")])
    assert files == [src / "a.parquet", src / "sub" / "b.parquet"] and root == src, "sorted, deduplicated"
    assert output_paths(files, root, "o") == [Path("o", "a.parquet"), Path("o", "sub", "b.parquet")]
    one, none = resolve_inputs(str(src / "a.parquet"))
    with pytest.raises(InputError, match="outputs are Parquet"):
        output_paths(one, none, "a.csv")
    folder_of_one, root = resolve_inputs(str(src / "sub"))
    assert output_paths(folder_of_one, root, "o") == [Path("o", "b.parquet")], "a folder's output is a folder"
    assert output_paths(folder_of_one, root, "b.parquet") == [Path("b.parquet")], "...or the one file it matched"
    summary = Annotator.from_bundle(tiny_bundle).annotate_parquet(src / "a.parquet", f"{tmp_path / 'py'}/")
    assert summary.written == [str(tmp_path / "py" / "a.parquet")]
