"""The device runbook (benchmarks/gpu/): the onnxruntime-gpu wheel trimmed to sm_90 and carried in two
parts, the device call's order and its stops, and the README's plan of the minutes."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

ROOT = REPO
GPU = ROOT / "benchmarks" / "gpu"


def _trim_module():
    spec = importlib.util.spec_from_file_location("trim_wheel", GPU / "trim_wheel.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["trim_wheel"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


trim = _trim_module()


# ------------------------------------------------------------------------------ a fatbin, made here


def _entry(kind: int, arch: int, payload: bytes) -> bytes:
    header = struct.pack("<HHIQIIHHI", kind, 0x0101, 64, len(payload), 0, 0, 0, 0, arch).ljust(64, b"\0")
    return header + payload


def _container(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", trim.FATBIN_MAGIC, 1, 16, len(body)) + body


def _elf(section: bytes) -> bytes:
    """A 64-bit little-endian ELF file whose only sections are .nv_fatbin and .shstrtab."""
    names = b"\0.nv_fatbin\0.shstrtab\0"
    data_at = 64
    names_at = data_at + len(section)
    shoff = (names_at + len(names) + 7) // 8 * 8
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 2)

    def sh(name, typ, offset, size):
        return struct.pack("<IIQQQQIIQQ", name, typ, 0, 0, offset, size, 0, 0, 8, 0)

    table = sh(0, 0, 0, 0) + sh(1, 1, data_at, len(section)) + sh(12, 3, names_at, len(names))
    return (header + section + names).ljust(shoff, b"\0") + table


SM80, SM90, SM120 = b"\x80" * 300, b"\x90" * 200, b"\x12" * 100
FATBIN = (_container(_entry(2, 80, SM80), _entry(2, 90, SM90), _entry(2, 120, SM120)) + bytes(8)  # padding
          + _container(_entry(2, 120, SM120)))  # sm_120 only: kept whole


def test_only_the_sm90_cubins_keep_their_bytes():
    lib = bytearray(_elf(FATBIN))
    report = trim.trim_fatbins(lib)
    assert report.containers == 2 and report.containers_kept_whole == 1
    assert report.zeroed_bytes == {80: len(SM80), 120: len(SM120)}
    assert SM90 in lib and SM80 not in lib and lib.count(SM120) == 1  # the sm_120-only container
    assert len(lib) == len(_elf(FATBIN))  # same layout: offsets unchanged
    # headers intact: the same containers and entries are read back
    offset, size = trim.sections(lib)[".nv_fatbin"]
    archs = [[(k, a) for k, a, *_ in entries] for _, entries in trim.fatbin_entries(lib, offset, offset + size)]
    assert archs == [[(2, 80), (2, 90), (2, 120)], [(2, 120)]]


def test_not_an_elf_is_refused():
    with pytest.raises(ValueError):
        trim.sections(b"MZ" + bytes(100))


# -------------------------------------------------------------------------------- a wheel, made here


def _wheel(path: Path) -> Path:
    dist = "onnxruntime_gpu-1.31.1.dist-info"
    files = {
        "onnxruntime/__init__.py": b"__version__ = '1.31.1'\n",
        "onnxruntime/capi/libonnxruntime_providers_cuda.so": _elf(FATBIN),
        "onnxruntime/capi/libonnxruntime.so.1.31.1": b"C API library" * 100,
        "onnxruntime/capi/libonnxruntime_providers_tensorrt.so": b"tensorrt" * 100,
        "onnxruntime/capi/libonnxruntime_providers_shared.so": b"shared",
        f"{dist}/METADATA": b"Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.31.1\n",
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/RECORD", "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n")
    return path


def test_the_trimmed_wheel_drops_the_unneeded_libraries_and_records_its_files(tmp_path):
    src = _wheel(tmp_path / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl")
    dst = tmp_path / "out" / src.name
    dst.parent.mkdir()
    trim.trim_wheel(src, dst, log=lambda m: None)
    with zipfile.ZipFile(dst) as z:
        names = set(z.namelist())
        assert "onnxruntime/capi/libonnxruntime.so.1.31.1" not in names
        assert "onnxruntime/capi/libonnxruntime_providers_tensorrt.so" not in names
        assert {"onnxruntime/__init__.py", "onnxruntime/capi/libonnxruntime_providers_shared.so"} <= names
        lib = z.read("onnxruntime/capi/libonnxruntime_providers_cuda.so")
        assert SM90 in lib and SM80 not in lib
        assert all(i.compress_type == zipfile.ZIP_STORED for i in z.infolist())  # xz compresses it whole
        record = z.read("onnxruntime_gpu-1.31.1.dist-info/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.split(",")
            if name.endswith("RECORD"):
                continue
            data = z.read(name)
            assert int(size) == len(data) and digest == trim._record_line(name, data).split(",")[1]
        assert len(record) == len(names)


def test_the_parts_join_back_to_the_wheel_and_pip_installs_it(tmp_path):
    src = _wheel(tmp_path / "onnxruntime_gpu-1.31.1-py3-none-any.whl")  # any tag: pip here is not the device's
    parts = tmp_path / "parts"
    parts.mkdir()
    trimmed = parts / src.name
    trim.trim_wheel(src, trimmed, log=lambda m: None)
    written = trim.compress_and_split(trimmed, parts, 2, 1.0, log=lambda m: None)
    assert [p.parent.name for p in written] == ["1", "2"] and (parts / "1" / "sha256").exists()
    joined = trim.join_parts(parts, tmp_path / src.name)
    assert hashlib.sha256(joined.read_bytes()).hexdigest() == hashlib.sha256(trimmed.read_bytes()).hexdigest()
    # the command device.sh runs, then pip as device.sh runs it
    done = subprocess.run([sys.executable, str(GPU / "trim_wheel.py"), "join", str(parts), "--out",
                           str(tmp_path / "cli" / src.name)], capture_output=True, text=True)
    assert done.returncode != 0  # the folder of --out must exist ...
    (tmp_path / "cli").mkdir()
    done = subprocess.run([sys.executable, str(GPU / "trim_wheel.py"), "join", str(parts), "--out",
                           str(tmp_path / "cli" / src.name)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--target", str(site), str(tmp_path / "cli" / src.name)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (site / "onnxruntime" / "capi" / "libonnxruntime_providers_cuda.so").read_bytes() == \
        zipfile.ZipFile(trimmed).read("onnxruntime/capi/libonnxruntime_providers_cuda.so")


def test_a_damaged_part_is_refused(tmp_path):
    src = _wheel(tmp_path / "w-1.0-py3-none-any.whl")
    parts = tmp_path / "parts"
    parts.mkdir()
    trimmed = parts / src.name
    trim.trim_wheel(src, trimmed, log=lambda m: None)
    trim.compress_and_split(trimmed, parts, 2, 1.0, log=lambda m: None)
    (parts / "1" / "sha256").write_text("0" * 64 + "\n")
    with pytest.raises(SystemExit, match="sha256"):
        trim.join_parts(parts, tmp_path / "again.whl")


def test_parts_that_do_not_fit_are_refused(tmp_path):
    import os

    big = tmp_path / "big.whl"
    big.write_bytes(os.urandom(3 * 2**20))  # xz cannot shrink it into 2 parts of 1 MiB
    with pytest.raises(SystemExit, match="does not fit"):
        trim.compress_and_split(big, tmp_path / "parts", 2, 1.0, log=lambda m: None)


# ------------------------------------------------------------------------------------- the device call


def test_the_plan_puts_the_check_first_then_bf16_the_rival_and_fp32():
    from tommer.benchmarks import gpu_session as g

    steps = [(s[0], s[1]) for s in g.PLAN]
    assert steps[:6] == [("export", "bf16"), ("check", "bf16"), ("run", "onnx-cuda-bf16"), ("run", "torch-bf16-sdpa"),
                         ("export", "fp32"), ("run", "onnx-cuda-fp32")]
    names = [s[1] for s in g.PLAN if s[0] == "run"]
    for later in ("onnx-cuda-fp16", "onnx-cuda-bf16 cuda-graphs", "onnx-cuda-bf16 budget-16384", "torch-bf16-compile"):
        assert names.index(later) > names.index("onnx-cuda-fp32"), later
    run = {s[1]: s for s in g.PLAN if s[0] == "run"}
    assert run["onnx-cuda-bf16"][3] == 65536 and run["torch-bf16-sdpa"][3] == 65536


class _Fake:
    """stage_device with the slow parts replaced: a clock the steps move, and a record of the calls."""

    def __init__(self, monkeypatch, g, tmp_path, check_rc=0, graphs=True, step_s=10.0):
        self.calls, self.clock = [], 0.0
        self.g, self.results = g, g.Results(tmp_path / "work", tmp_path / "out")
        (tmp_path / "work").mkdir(exist_ok=True)

        def export(results, work, dtype, smoke):
            self.calls.append(("export", dtype))
            self.clock += step_s
            results.data.setdefault("exports", {})[dtype] = {"seconds": step_s}
            (g.bundle_path(work, dtype)).mkdir(parents=True, exist_ok=True)
            (g.bundle_path(work, dtype) / "tommer.json").write_text("{}")
            return True

        def check(results, work, dtype, smoke):
            self.calls.append(("check", dtype))
            self.clock += step_s
            found = {"returncode": check_rc, "cuda_graphs_possible": graphs, "seconds": step_s, "report": ["check: x"],
                     "command": "--check"}
            results.data.setdefault("checks", {})[dtype] = found
            return found

        def measure(results, work, src, name, spec):
            self.calls.append(("run", name))
            self.clock += step_s
            results.add_run(name, {"seconds_spent": step_s, "tokens": 100, "padded_tokens": 120, "wall_seconds": 1.0,
                                   "seconds": {"infer": 0.5}, "tokens_per_second": 100.0,
                                   "infer_tokens_per_second": 200.0})
            return {}

        monkeypatch.setattr(g, "export", export)
        monkeypatch.setattr(g, "placement_check", check)
        monkeypatch.setattr(g, "measure", measure)
        monkeypatch.setattr(g, "corpus", lambda work, tokens: work / "corpus.parquet")
        monkeypatch.setattr(g, "head_folder", lambda work, smoke: work / "head")
        monkeypatch.setattr(g, "now", lambda: self.clock)
        monkeypatch.setattr(g, "FIRST_GUESS", {k: step_s for k in g.FIRST_GUESS})

    def run(self, tmp_path, budget_s=1e9):
        return self.g.stage_device(self.results, tmp_path / "work", 1000, budget_s, False, False, 0.0)


def test_a_failed_check_stops_the_call_before_any_run(monkeypatch, tmp_path):
    from tommer.benchmarks import gpu_session as g

    fake = _Fake(monkeypatch, g, tmp_path, check_rc=1)
    assert fake.run(tmp_path) == g.CHECK_FAILED
    assert fake.calls == [("export", "bf16"), ("check", "bf16")]
    assert "check" in fake.results.data["stopped"]


def test_the_device_call_measures_in_plan_order_and_skips_impossible_cuda_graphs(monkeypatch, tmp_path):
    from tommer.benchmarks import gpu_session as g

    fake = _Fake(monkeypatch, g, tmp_path, graphs=False)
    assert fake.run(tmp_path) == 0
    runs = [name for kind, name in fake.calls if kind == "run"]
    assert runs[:3] == ["onnx-cuda-bf16", "torch-bf16-sdpa", "onnx-cuda-fp32"]
    assert not any("cuda-graphs" in r for r in runs)
    assert fake.results.data["runs"]["onnx-cuda-bf16 cuda-graphs"]["skipped"] is True
    assert fake.calls.index(("export", "fp32")) < fake.calls.index(("run", "onnx-cuda-fp32"))


def test_the_budget_stops_new_steps_and_a_second_call_goes_on(monkeypatch, tmp_path):
    from tommer.benchmarks import gpu_session as g

    fake = _Fake(monkeypatch, g, tmp_path, step_s=10.0)
    assert fake.run(tmp_path, budget_s=45.0) == 0  # export, check, bf16, torch; then too little is left
    assert fake.calls == [("export", "bf16"), ("check", "bf16"), ("run", "onnx-cuda-bf16"), ("run", "torch-bf16-sdpa")]
    assert "onnx-cuda-fp32" in fake.results.data["unfinished"]
    fake.calls.clear()
    fake.clock = 0.0
    fake.run(tmp_path, budget_s=45.0)  # a rerun: what was done is kept, the check that passed is not redone
    assert fake.calls[:2] == [("export", "fp32"), ("run", "onnx-cuda-fp32")]


# -------------------------------------------------------------------------------------- the README plan


def _plan_rows() -> list[dict[str, str]]:
    text = (GPU / "README.md").read_text()
    table = text.split("<!-- plan -->")[1].split("<!-- /plan -->")[0]
    rows = [r.strip().strip("|").split("|") for r in table.strip().splitlines() if r.startswith("|")]
    head = [c.strip() for c in rows[0]]
    return [dict(zip(head, (c.strip() for c in r))) for r in rows[2:]]


def test_the_readme_plan_fits_twelve_minutes_and_the_device_limits():
    *rows, total = _plan_rows()
    seconds = [int(re.search(r"\d+", r["estimate (s)"]).group()) for r in rows]
    assert "total" in total["stage"] and int(total["estimate (s)"].strip("*")) == sum(seconds)
    assert sum(seconds) <= 12 * 60, sum(seconds)
    calls = [r for r in rows if r["timeout_s"] not in ("", "-")]
    assert len(calls) == 2
    for r in calls:
        timeout = int(r["timeout_s"])
        assert timeout <= 600
        command = r["command"].strip("`")
        assert len(command) <= 2000 and command.startswith("bash benchmarks/gpu/device.sh receive ")
        assert r["carry"].strip("`") in ('[".whl/ortgpu/1"]', '[".whl/ortgpu/2"]')
        assert int(re.search(r"\d+", r["estimate (s)"]).group()) + 60 <= timeout  # room for a slow step
        if " device " in command:  # the device call keeps a budget: install and start-up fit beside it
            budget = re.search(r"--budget-s (\d+)", command)
            assert budget and int(budget.group(1)) + 60 <= timeout


def test_a_part_and_the_working_tree_fit_one_call():
    tree = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                          capture_output=True, text=True).stdout.split("\0")
    size = sum((ROOT / f).stat().st_size for f in tree if f and (ROOT / f).is_file())
    part_mib = 56.0  # trim_wheel build's default --part-mib, what prepare.sh passes
    assert "--part-mib 56" in (GPU / "prepare.sh").read_text()
    assert size / 2**20 + part_mib <= 64, f"working tree {size / 2**20:.1f} MiB + a part of {part_mib} MiB"
