"""onnxruntime-gpu cut down to what one H100/H200 (sm_90) session needs, in parts small enough to carry.

    python benchmarks/gpu/trim_wheel.py build WHEEL --out .whl/ortgpu --parts 2 --part-mib 56   # here
    python benchmarks/gpu/trim_wheel.py join FOLDER --out /tmp/WHEEL                         # there

What goes (``plan``, from reading the wheel: the Python module ``onnxruntime_pybind11_state`` needs
no ``libonnxruntime.so``, and TensorRT is not used on the device):

* ``libonnxruntime.so.*``: the C API library, for programs linking onnxruntime; the Python module
  is built without it (its ELF ``NEEDED`` list has none of onnxruntime's libraries);
* ``libonnxruntime_providers_tensorrt.so``: the TensorRT provider (it needs libnvinfer, absent there);
* in ``libonnxruntime_providers_cuda.so``, the machine code of every other GPU architecture: the
  ``.nv_fatbin`` section is a sequence of fatbin containers (one per compiled CUDA file), each a list
  of entries (kind 2: an ELF cubin for one ``sm_XY``; kind 1: PTX). In each container that holds an
  sm_90 cubin, the payload of every other entry is overwritten with zeros; its header is kept, so
  the layout, offsets and the driver's choice (an exact sm_90 cubin) stay as they were. Containers
  without an sm_90 entry (kernels built only for sm_120) are kept whole. The zeros compress away.

The trimmed wheel is stored uncompressed and then xz-compressed as a whole (one stream), and cut
into ``--parts`` pieces of at most ``--part-mib`` MiB; ``sha256`` of the wheel goes with part 1.
On the device, ``join`` (``benchmarks/gpu/device.sh``) puts the parts together, decompresses them with
Python's ``lzma`` (the image need not have xz), checks the digest, and pip installs the wheel ``--no-index``.
Only the standard library is used, so this runs under any Python there.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import lzma
import struct
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_ELF = 1, 2
KEEP_ARCH = 90
DROPPED = ("libonnxruntime.so", "libonnxruntime_providers_tensorrt.so")


@dataclass
class TrimReport:
    containers: int = 0
    containers_kept_whole: int = 0  # no sm_90 entry: left as they were
    kept_bytes: dict[int, int] = field(default_factory=dict)  # arch -> bytes of entries kept
    zeroed_bytes: dict[int, int] = field(default_factory=dict)  # arch -> payload bytes zeroed


def sections(elf: bytes | bytearray) -> dict[str, tuple[int, int]]:
    """ELF64 little-endian section name -> (file offset, size)."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    raw = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = raw[shstrndx][4]
    out = {}
    for name, _type, _flags, _addr, offset, size in raw:
        end = elf.index(b"\0", strtab + name)
        out[bytes(elf[strtab + name:end]).decode()] = (offset, size)
    return out


def fatbin_entries(data: bytes | bytearray, start: int, end: int):
    """Yield ``(container_offset, [(kind, arch, entry_offset, header_size, payload_size), ...])`` for
    each fatbin container in ``data[start:end]`` (8-byte aligned, zero padding between them)."""
    p = start
    while p + 16 <= end:
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, p)
        if magic != FATBIN_MAGIC:
            p += 8
            continue
        q, stop, entries = p + header_size, p + header_size + fat_size, []
        while q < stop:
            kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", data, q)
            arch, = struct.unpack_from("<I", data, q + 28)
            entries.append((kind, arch, q, entry_header, payload))
            q += entry_header + payload
        yield p, entries
        p = stop


def trim_fatbins(lib: bytearray, keep_arch: int = KEEP_ARCH) -> TrimReport:
    """Zero, in place, the payload of every entry but ``sm_<keep_arch>`` cubins in the containers
    that hold one (see the module docstring)."""
    offset, size = sections(lib)[".nv_fatbin"]
    report = TrimReport()
    for _container, entries in fatbin_entries(lib, offset, offset + size):
        report.containers += 1
        if not any(kind == KIND_ELF and arch == keep_arch for kind, arch, *_ in entries):
            report.containers_kept_whole += 1
            for _kind, arch, _q, header, payload in entries:
                report.kept_bytes[arch] = report.kept_bytes.get(arch, 0) + header + payload
            continue
        for kind, arch, q, header, payload in entries:
            if kind == KIND_ELF and arch == keep_arch:
                report.kept_bytes[arch] = report.kept_bytes.get(arch, 0) + header + payload
            else:
                lib[q + header:q + header + payload] = bytes(payload)
                report.zeroed_bytes[arch] = report.zeroed_bytes.get(arch, 0) + payload
    return report


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def trim_wheel(src: Path, dst: Path, keep_arch: int = KEEP_ARCH, log=print) -> TrimReport:
    """Write ``dst``, the wheel ``src`` without the dropped libraries and with the CUDA provider's
    other architectures zeroed, stored uncompressed, with a RECORD that matches it."""
    report = TrimReport()
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        record_name, lines = None, []
        for info in zin.infolist():
            base = info.filename.rsplit("/", 1)[-1]
            if info.filename.endswith(".dist-info/RECORD"):
                record_name = info.filename
                continue
            if any(base.startswith(d) for d in DROPPED):
                log(f"dropped {info.filename} ({info.file_size / 2**20:.0f} MiB)")
                continue
            data = zin.read(info)
            if base == "libonnxruntime_providers_cuda.so":
                lib = bytearray(data)
                report = trim_fatbins(lib, keep_arch)
                data = bytes(lib)
                log(f"trimmed {info.filename}: kept {sum(report.kept_bytes.values()) / 2**20:.0f} MiB of cubins "
                    f"({ {k: round(v / 2**20) for k, v in sorted(report.kept_bytes.items())} } MiB by sm), zeroed "
                    f"{sum(report.zeroed_bytes.values()) / 2**20:.0f} MiB; {report.containers} containers, "
                    f"{report.containers_kept_whole} without sm_{keep_arch} kept whole")
            out = zipfile.ZipInfo(info.filename, date_time=info.date_time)
            out.external_attr = info.external_attr
            zout.writestr(out, data)
            lines.append(_record_line(info.filename, data))
        if record_name is None:
            raise ValueError(f"{src}: no .dist-info/RECORD: not a wheel")
        lines.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(lines) + "\n")
    return report


def compress_and_split(wheel: Path, out: Path, parts: int, part_mib: float, log=print) -> list[Path]:
    """``out/N/<wheel>.xz.part`` (N = 1..parts) and ``out/1/sha256`` (of the wheel itself)."""
    data = wheel.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    start = time.perf_counter()
    packed = lzma.compress(data, preset=6)
    log(f"xz: {len(data) / 2**20:.0f} MiB -> {len(packed) / 2**20:.1f} MiB in {time.perf_counter() - start:.0f} s")
    limit = int(part_mib * 2**20)
    if len(packed) > parts * limit:
        raise SystemExit(f"{len(packed) / 2**20:.1f} MiB does not fit in {parts} parts of {part_mib} MiB")
    size = -(-len(packed) // parts)
    written = []
    for i in range(parts):
        folder = out / str(i + 1)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{wheel.name}.xz.part"
        path.write_bytes(packed[i * size:(i + 1) * size])
        written.append(path)
    (out / "1" / "sha256").write_text(digest + "\n")
    return written


def join_parts(folder: Path, wheel: Path) -> Path:
    """The wheel again from ``folder/N/*.xz.part`` (N = 1, 2, ...) and ``folder/1/sha256``."""
    numbered = sorted((int(d.name), d) for d in folder.iterdir() if d.is_dir() and d.name.isdigit())
    parts = [p for _, d in numbered for p in sorted(d.glob("*.xz.part"))]
    if not parts:
        raise SystemExit(f"{folder}: no parts (N/*.xz.part)")
    data = lzma.decompress(b"".join(p.read_bytes() for p in parts))
    want = (folder / "1" / "sha256").read_text().split()[0]
    if hashlib.sha256(data).hexdigest() != want:
        raise SystemExit(f"{folder}: the joined wheel's sha256 is not the one part 1 carries ({len(parts)} parts found)")
    wheel.write_bytes(data)
    return wheel


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="trim, compress and cut a wheel into parts (here)")
    build.add_argument("wheel", type=Path, help="the onnxruntime-gpu wheel (pip download --no-deps)")
    build.add_argument("--out", type=Path, default=Path(".whl/ortgpu"), help="folder of the parts (default: %(default)s)")
    build.add_argument("--parts", type=int, default=2, help="pieces, one per device call (default: %(default)s)")
    build.add_argument("--part-mib", type=float, default=56.0,
                       help="the most MiB in a piece: 64 MiB a call less the working tree (default: %(default)s)")
    build.add_argument("--arch", type=int, default=KEEP_ARCH, help="the sm_XY cubins kept (default: %(default)s)")
    join = commands.add_parser("join", help="the wheel again from its parts (on the device)")
    join.add_argument("folder", type=Path, help="the folder holding 1/, 2/, ...")
    join.add_argument("--out", type=Path, required=True, help="the wheel to write (its file name as pip needs it)")
    args = parser.parse_args(argv)
    if args.command == "join":
        print(join_parts(args.folder, args.out))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    trimmed = args.out / args.wheel.name
    trim_wheel(args.wheel, trimmed, args.arch)
    for path in compress_and_split(trimmed, args.out, args.parts, args.part_mib):
        print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
    trimmed.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
