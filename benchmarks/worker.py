"""One measured run of one backend, in a fresh process: ``python -m tommer.benchmarks.worker SPEC_JSON``.

Loading is timed apart from the run; the run goes Parquet to Parquet. Prints one JSON line.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from tommer.benchmarks.lib.backends import BackendSpec, make_backend


def main() -> None:
    job = json.loads(sys.argv[1])
    spec = BackendSpec(**job["spec"])
    start = time.perf_counter()
    backend = make_backend(spec)
    load = time.perf_counter() - start
    start = time.perf_counter()
    result = backend.run(Path(job["src"]), Path(job["dst"]))
    result["wall_seconds"] = time.perf_counter() - start
    result["load_seconds"] = load
    result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main()
