"""Export a Llama-3.2-1B-geometry backbone (random weights) at layer 6: time, peak RSS, bundle size.

    python benchmarks/experiments/export_llama1b_geometry.py --work /tmp/tommer-export-bench \
        --out benchmarks/results/export_llama1b_geometry.json

The full 16-block model is built from a config and saved with ``save_pretrained``
(about 4.9 GB in fp32) into a folder named ``Llama-3.2-1B``, the LLM the published head
names (the exporter refuses a head on a backbone it does not name); each export then runs in a fresh process so that its peak
RSS is its own. The published L6 head (hidden size 2048) is read from ../shared
unless --head is given. Peak RSS must stay below the size of the full fp32 model:
the exporter never materialises blocks 7..15. The torch stage runs in a child process
while the exporter waits: ``peak_rss_bytes`` is the larger of the exporter's own peak and
the child's peak plus the exporter's memory while the child ran (both are recorded).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

from tommer.benchmarks.lib.report import write_report

LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                num_key_value_heads=8, vocab_size=128256, max_position_embeddings=131072,
                tie_word_embeddings=True, rope_theta=500000.0)
DEFAULT_HEAD = Path(__file__).resolve().parents[3] / "shared" / "models" / "ToMMeR-Llama-3.2-1B_L6_R64"

CHILD = """
import json, resource, sys, time
from tommer.exporter.export import export_bundle
from tommer.exporter.spec import ExportOptions

def rss_now():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()

if __name__ == "__main__":
    args = json.loads(sys.argv[1])
    at_spawn = []
    step = lambda message: at_spawn.append(rss_now()) if "child process" in message else None
    start = time.perf_counter()
    manifest = export_bundle(ExportOptions(**args), step=step)
    elapsed = time.perf_counter() - start
    # VmHWM, not ru_maxrss: a forked child inherits its parent's ru_maxrss across exec, and the
    # parent may have just built the 4.9 GB model
    with open("/proc/self/status") as fh:
        own = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps({"seconds": elapsed, "peak_rss_exporter_bytes": own, "peak_rss_torch_child_bytes": child,
                      "rss_exporter_while_child_runs_bytes": max(at_spawn, default=0),
                      "peak_rss_bytes": max(own, child + max(at_spawn, default=0)),
                      "validation": manifest.validation}))
"""


def build_backbone(folder: Path) -> int:
    """Save the random full model (fp32) and a tokenizer; returns the full model's parameter bytes."""
    import torch
    from transformers import AutoModel, LlamaConfig

    from tommer.exporter.random_models import make_tokenizer

    if not (folder / "config.json").exists():
        torch.manual_seed(0)
        model = AutoModel.from_config(LlamaConfig(**LLAMA_1B)).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
        model.save_pretrained(folder)
        make_tokenizer(folder)
        del model
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def export_once(backbone: Path, head: Path, out: Path, quantize: str | None) -> dict:
    args = dict(backbone=str(backbone), head=str(head), layer=6, output=str(out), quantize=quantize, overwrite=True)
    script = out.parent / "export_child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"export failed ({quantize or 'fp32'}):\n{proc.stderr[-4000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["bundle_bytes"] = sum(p.stat().st_size for p in out.iterdir())
    result["files"] = sorted(p.name for p in out.iterdir())
    return result


def markdown(result: dict) -> str:
    lines = [f"Command: `{result['command']}`", "",
             f"Machine: {result['machine']['platform']}, {result['machine']['cpus']} cores; the full fp32 model "
             f"{result['full_model_fp32_bytes'] / 1e9:.2f} GB", "",
             "| export | seconds | peak RSS (GB) | below the full model | bundle (GB) | max abs error | DICE |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in result["exports"].items():
        v = r["validation"]
        lines.append(f"| {name} | {r['seconds']:.1f} | {r['peak_rss_bytes'] / 1e9:.2f} | {r['peak_rss_below_full_model']} | "
                     f"{r['bundle_bytes'] / 1e9:.2f} | {v.get('max_abs_error', float('nan')):.2e} | "
                     f"{v.get('dice', float('nan')):.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/tommer-export-bench"), help="scratch folder (default: %(default)s)")
    parser.add_argument("--head", type=Path, default=DEFAULT_HEAD, help="L6 head folder (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/export_llama1b_geometry.json"),
                        help="JSON results (default: %(default)s)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    full_bytes = build_backbone(args.work / "Llama-3.2-1B")
    build_seconds = time.perf_counter() - start
    runs = {}
    for quantize in (None, "int8"):
        name = quantize or "fp32"
        runs[name] = export_once(args.work / "Llama-3.2-1B", args.head, args.work / f"bundle-{name}", quantize)
        runs[name]["peak_rss_below_full_model"] = runs[name]["peak_rss_bytes"] < full_bytes
        print(f"{name}: {runs[name]['seconds']:.1f} s, peak RSS {runs[name]['peak_rss_bytes'] / 1e9:.2f} GB "
              f"(exporter {runs[name]['peak_rss_exporter_bytes'] / 1e9:.2f}, torch child "
              f"{runs[name]['peak_rss_torch_child_bytes'] / 1e9:.2f}) "
              f"(full fp32 model {full_bytes / 1e9:.2f} GB), bundle {runs[name]['bundle_bytes'] / 1e9:.2f} GB, "
              f"max abs err {runs[name]['validation']['max_abs_error']:.2e}, DICE {runs[name]['validation']['dice']:.3f}")
    result = {"command": "python benchmarks/experiments/export_llama1b_geometry.py " + " ".join(sys.argv[1:]),
              "machine": {"platform": platform.platform(), "cpus": __import__("os").cpu_count(),
                          "python": platform.python_version()},
              "model": {"geometry": "Llama-3.2-1B (random weights)", **LLAMA_1B, "layer": 6},
              "full_model_fp32_bytes": full_bytes, "build_seconds": build_seconds, "exports": runs}
    files = write_report(args.out.parent, args.out.stem, result, markdown(result))
    print(f"wrote {' and '.join(map(str, files))}")


if __name__ == "__main__":
    main()
