"""``tommer-annotate --check``: where the graph runs, from onnxruntime's placement log.

Real sessions on the CPU (the tiny bundle), and onnxruntime's GPU wording from the logs in
tests/data/ort_logs, which are written from onnxruntime's source strings and the strings of
onnxruntime-gpu 1.31.1's CUDA library, not recorded on a GPU (each file says so), one of them
with a planted fallback.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pytest
from conftest import DATA
from typer.testing import CliRunner

from tommer.runtime.execution import placement

LOGS = DATA / "ort_logs"
TINY_NODES = 136  # the tiny bundle's optimised graph, as the GPU wording files list it


def _log(name: str) -> str:
    return (LOGS / name).read_text()


# ------------------------------------------------------------------------------------ real sessions


def test_a_real_cpu_session_reports_every_node_on_the_cpu(tiny_bundle, tmp_path):
    import onnx
    import onnxruntime as ort

    from tommer.runtime.annotator import AnnotateOptions, Annotator

    with placement.observe() as seen:
        annotator = Annotator(tiny_bundle, AnnotateOptions(provider="cpu"))
        annotator.annotate(["Ada Lovelace met Charles Babbage in London."])
    parsed = placement.parse_log(seen.text)
    # the count onnxruntime logs is the optimised graph's: dump that graph and count its nodes
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimised.data")
    ort.InferenceSession(str(tiny_bundle / "model.onnx"), options, providers=["CPUExecutionProvider"])
    nodes = len(onnx.load(str(tmp_path / "optimised.onnx"), load_external_data=False).graph.node)
    assert parsed.seen and parsed.counts == {"CPUExecutionProvider": nodes}
    result = placement.check(parsed, annotator.provider)
    assert result.ok and result.off_provider == [] and result.memcpy == 0 and result.cuda_graphs is None
    assert result.total_nodes == result.on_provider == nodes


def test_observe_captures_native_stderr_and_stdout_and_restores_both(capfd):
    import onnxruntime as ort

    with placement.observe(ort) as seen:
        os.write(2, b"native stderr line\n")
        os.write(1, b"native stdout line\n")
        assert placement._hooks  # sessions opened here get the verbose options
    os.write(2, b"after\n")
    out, err = capfd.readouterr()
    assert "native stderr line" in seen.text and "native stdout line" in seen.text
    assert "native" not in out + err and "after" in err
    assert placement._hooks == [] and os.environ.get(placement.ATTENTION_DEBUG_ENV) is None


def test_observe_restores_the_descriptors_when_the_body_raises(capfd):
    with pytest.raises(RuntimeError):
        with placement.observe():
            raise RuntimeError("boom")
    os.write(2, b"still here\n")
    assert "still here" in capfd.readouterr().err


def test_sessions_outside_observe_stay_quiet(tiny_bundle, capfd):
    from tommer.runtime.execution.session import open_session

    open_session(tiny_bundle / "model.onnx", "cpu")
    assert "Node placements" not in capfd.readouterr().err


def test_check_cli_on_the_cpu_passes_and_logs_nothing_to_the_terminal(tiny_bundle):
    done = subprocess.run([sys.executable, "-m", "tommer.runtime.cli.annotate", "--check", "--model", str(tiny_bundle),
                           "--provider", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("provider: CPUExecutionProvider (") for line in lines), lines
    assert "nodes not on it: none" in lines and "Memcpy nodes: 0" in lines and "check: passed" in lines
    assert "VerifyEachNodeIsAssignedToAnEp" not in done.stdout + done.stderr  # the verbose log was captured


def test_annotate_without_source_and_without_check_is_an_error(tiny_bundle):
    from tommer.runtime.cli.annotate import app

    result = CliRunner().invoke(app, ["--model", str(tiny_bundle)])
    assert result.exit_code == 2 and "SOURCE" in result.output


# ----------------------------------------------------------------------- GPU wording (written logs)


def test_every_written_log_says_it_is_not_a_gpu_recording():
    files = sorted(LOGS.glob("*.txt"))
    assert len(files) >= 4
    for path in files:
        assert path.read_text().startswith("# NOT a GPU recording"), path


def test_all_nodes_on_cuda_with_flash_attention():
    result = placement.check(placement.parse_log(_log("cuda_bf16_all_on_gpu.txt")), "cuda", cuda_graphs=True)
    assert result.ok, result.problems
    assert result.total_nodes == result.on_provider == TINY_NODES and result.memcpy == 0
    assert result.attention == {"flash": 3} and result.cuda_graphs is True


def test_shape_nodes_left_on_the_cpu_are_no_fallback_but_their_copies_stop_cuda_graphs():
    parsed = placement.parse_log(_log("cuda_fp16_shape_nodes_on_cpu.txt"))
    assert len(parsed.on_purpose) == 10 and len(parsed.memcpy_added) == 2
    result = placement.check(parsed, "cuda")
    assert result.ok and result.fell_back == [] and len(result.off_provider) == 10
    assert result.memcpy == 2 and result.cuda_graphs is False and "Memcpy" in result.cuda_graphs_why
    assert result.attention == {"memory-efficient": 3}
    assert result.total_nodes == TINY_NODES + 2  # the two copy nodes
    asked = placement.check(parsed, "cuda", cuda_graphs=True)
    assert not asked.ok and "--cuda-graphs" in asked.problems[0]


def test_the_planted_fallback_fails_the_check():
    result = placement.check(placement.parse_log(_log("cuda_planted_fallback.txt")), "cuda")
    assert not result.ok
    assert sorted(node for _, _, node in result.fell_back) == ["node_RotaryEmbedding_330/3d", "node_RotaryEmbedding_333/3d"]
    assert {where for where, _, _ in result.fell_back} == {"CPUExecutionProvider"}
    assert result.memcpy == 4 and result.cuda_graphs is False
    lines = placement.report_lines(result)
    assert lines[-1] == "check: FAILED" and any("RotaryEmbedding (node_RotaryEmbedding_333/3d) on CPU" in x for x in lines)


def test_a_missing_cuda_kernel_counts_even_when_onnxruntime_lists_no_nodes():
    text = ("[W:onnxruntime:Default, cuda_execution_provider.cc:1 GetCapability] CUDA kernel not found in registries "
            "for Op type: RotaryEmbedding node name: rope_0\n"
            "[V:onnxruntime:, session_state.cc:1 VerifyEachNodeIsAssignedToAnEp] Node placements\n"
            "[V:onnxruntime:, session_state.cc:2 VerifyEachNodeIsAssignedToAnEp]  All nodes placed on "
            "[CUDAExecutionProvider]. Number of nodes: 5\n")
    result = placement.check(placement.parse_log(text), "cuda")
    assert not result.ok and result.fell_back == [("not CUDA", "RotaryEmbedding", "rope_0")]


def test_fp32_on_cuda_reports_the_unfused_attention():
    result = placement.check(placement.parse_log(_log("cuda_fp32_unfused.txt")), "cuda")
    assert result.ok and set(result.attention) == {"unfused"} and result.attention["unfused"] == 4
    assert "unfused" in placement.describe_attention(result.attention, "cuda")


def test_no_placement_report_fails_the_check():
    result = placement.check(placement.parse_log("nothing verbose here\n"), "cuda")
    assert not result.ok and not result.seen and "placement report" in result.problems[0]


def test_everything_on_the_cpu_while_cuda_loaded_fails():
    text = ("[V:onnxruntime:, s.cc:1 VerifyEachNodeIsAssignedToAnEp] Node placements\n"
            "[V:onnxruntime:, s.cc:2 VerifyEachNodeIsAssignedToAnEp]  All nodes placed on [CPUExecutionProvider]. "
            "Number of nodes: 7\n")
    assert not placement.check(placement.parse_log(text), "cuda").ok


def test_check_cli_exits_nonzero_on_the_planted_fallback(monkeypatch, tiny_bundle):
    """The CLI path with a stand-in annotator that 'loads CUDA' and writes the planted log to fd 2,
    as onnxruntime's C++ logging does."""
    import tommer.runtime.annotator as public
    from tommer.runtime.cli.annotate import app

    class Planted:
        provider = "cuda"

        def __init__(self, folder, options):
            self.options = dataclasses.replace(options, max_tokens=64)
            self.max_tokens = 64
            os.write(2, _log("cuda_planted_fallback.txt").encode())

        def annotate(self, texts):
            return [[] for _ in texts]

    monkeypatch.setattr(public, "Annotator", Planted)
    result = CliRunner().invoke(app, ["--check", "--model", str(tiny_bundle), "--provider", "cuda"])
    assert isinstance(result.exception, SystemExit), result.exception  # the check's own exit, no crash
    assert result.exit_code == 1, result.output
    assert "check: FAILED" in result.output and "node_RotaryEmbedding_333/3d" in result.output
    assert "Memcpy nodes: 4" in result.output
