"""The runtime never imports torch or transformers."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import sys
import importlib, pkgutil
import tommer, tommer.runtime
names = [m.name for m in pkgutil.walk_packages(tommer.runtime.__path__, "tommer.runtime.")]
assert len(names) > 30, names
for name in names:
    if name.endswith("spacy_component"):
        continue  # imports spaCy, which the runtime itself does not need
    importlib.import_module(name)
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'onnx', 'onnxscript'})
print(','.join(heavy))
"""


def test_runtime_imports_no_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


LIGHT = """
import importlib, sys
module, function = {entry!r}.rsplit(".", 1)
sys.argv = {argv!r}
try:
    getattr(importlib.import_module(module), function)()
    code = 0
except SystemExit as exc:
    code = exc.code or 0
heavy = sorted({{m.split('.')[0] for m in sys.modules}} & {{'onnxruntime', 'torch', 'transformers', 'onnx'}})
print(code, ','.join(heavy) or '-')
"""


def run_light(entry: str, argv: list[str]) -> tuple[str, str]:
    """Run a console entry point in a fresh interpreter: its exit code and the heavy modules it loaded."""
    out = subprocess.run([sys.executable, "-c", LIGHT.format(entry=entry, argv=argv)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    status, heavy = out.stdout.strip().splitlines()[-1].split(" ")
    return status, heavy


def test_light_entry_points(tmp_path):
    """import tommer is light; tommer-export --help and a model-free tommer-eval load no onnxruntime."""
    out = subprocess.run([sys.executable, "-c", "import sys, tommer; print(sorted({m.split('.')[0] for m in "
                          "sys.modules} & {'onnxruntime', 'pyarrow', 'torch', 'numpy'}))"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    assert run_light("tommer.exporter.cli.main", ["tommer-export", "--help"]) == ("0", "-")
    import pyarrow as pa
    import pyarrow.parquet as pq

    mention = pa.struct([("start", pa.int64()), ("end", pa.int64()), ("text", pa.string()), ("score", pa.float32())])
    for name, spans in (("a", [[(0, 4)], []]), ("b", [[(0, 4)], [(1, 3)]])):
        rows = [[{"start": s, "end": e, "text": "x", "score": 0.9} for s, e in doc] for doc in spans]
        pq.write_table(pa.table({"text": ["abcd efg", "xyz"], "mentions": pa.array(rows, pa.list_(mention))}),
                       tmp_path / f"{name}.parquet")
    status, heavy = run_light("tommer.runtime.cli.quality.eval_main",
                              ["tommer-eval", str(tmp_path / "a.parquet"), "--against", str(tmp_path / "b.parquet")])
    assert (status, heavy) == ("0", "-")
    import tommer

    assert tommer.Annotator.__name__ == "Annotator" and "Annotator" in dir(tommer)
    with __import__("pytest").raises(AttributeError, match="no attribute 'Nope'"):
        tommer.Nope  # noqa: B018


def help_options(app) -> dict[str, str]:
    """``--option``: its help text, from the rendered ``--help`` (whatever click Typer bundles)."""
    import re

    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["--help"], terminal_width=200)
    assert out.exit_code == 0, out.output
    records: dict[str, str] = {}
    name = None
    for line in out.output.splitlines():
        found = re.match(r"\s{2}(-\w, )?(--[\w-]+)", line)
        if found:
            name = found.group(2)
            records[name] = line
        elif name and line.startswith(" " * 10):
            records[name] += " " + line.strip()
        else:
            name = None
    records.pop("--help", None)
    return {k: " ".join(v.split()) for k, v in records.items()}


def test_cli_choices_are_the_runtimes_constants_and_help_states_every_default():
    import re

    from tommer.benchmarks import cli as bench_cli
    from tommer.benchmarks.lib import backends
    from tommer.exporter import cli as export_cli
    from tommer.exporter import spec
    from tommer.runtime import bundle
    from tommer.runtime import options as opts
    from tommer.runtime.cli import annotate as cli
    from tommer.runtime.cli import quality as quality_cli
    from tommer.runtime.execution import providers

    def values(enum):
        return tuple(e.value for e in enum)

    assert values(cli.Decoding) == opts.STRATEGIES
    assert values(cli.Provider) == ("auto", *providers.AUTO_ORDER)
    assert set(opts.DEFAULT_CHUNK_ROWS) == set(opts.DEFAULT_BATCH_TOKENS) == set(providers.AUTO_ORDER)
    assert values(export_cli.DType) == spec.DTYPES and values(export_cli.Quantization) == spec.QUANTIZATIONS
    assert values(export_cli.Target) == spec.TARGETS == bundle.GRAPH_TARGETS
    assert bench_cli.ALL_BACKENDS == backends.ALL_BACKENDS
    assert set(backends.ALL_BACKENDS) == set(backends.REFERENCE_BACKENDS) | set(backends.ONNX_BACKENDS)
    assert set(backends.ONNX_BACKENDS.values()) <= set(providers.AUTO_ORDER)
    for app in (cli.app, quality_cli.eval_app, quality_cli.show_app, export_cli.app, bench_cli.app, bench_cli.feed_app):
        options = help_options(app)
        assert len(options) >= 5
        for name, text in options.items():
            if not re.match(r"(-\w, )?--[\w-]+ <", text) and "/ --no-" not in text:
                continue  # a plain flag: off unless given
            assert "[default:" in text or "[required]" in text, f"{name}: --help states no default: {text}"
    annotate, export = help_options(cli.app), help_options(export_cli.app)
    assert f"<{'|'.join(opts.STRATEGIES)}>" in annotate["--decoding"] and "[default: threshold]" in annotate["--decoding"]
    assert f"<auto|{'|'.join(providers.AUTO_ORDER)}>" in annotate["--provider"] and "[default: auto]" in annotate["--provider"]
    assert f"<{'|'.join(spec.DTYPES)}>" in export["--dtype"] and "[default: fp32]" in export["--dtype"]
    assert f"<{'|'.join(spec.TARGETS)}>" in export["--target"] and "[default: onnxruntime]" in export["--target"]
    # the help wraps at hyphens too: compare without spaces
    assert ",".join(backends.ALL_BACKENDS) in help_options(bench_cli.app)["--backends"].replace(" ", "")


def test_annotating_never_imports_pandas(tiny_bundle, tmp_path):
    """pandas is not needed to annotate; ``pa.array`` on numpy would import it (0.3-0.6 s a process)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"id": [1, 2, 3], "text": ["John lives in Paris.", "", "Mary met Bob in New York."]}),
                   tmp_path / "in.parquet")
    code = LIGHT.replace("{{'onnxruntime', 'torch', 'transformers', 'onnx'}}", "{{'pandas', 'torch', 'transformers'}}")
    out = subprocess.run([sys.executable, "-c", code.format(entry="tommer.runtime.cli.annotate.main", argv=[
        "tommer-annotate", str(tmp_path / "in.parquet"), "-m", str(tiny_bundle), "-o", str(tmp_path / "out.parquet"),
        "--provider", "cpu", "--quiet"])], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "0 -", out.stdout + out.stderr
    assert pq.read_table(tmp_path / "out.parquet").num_rows == 3
