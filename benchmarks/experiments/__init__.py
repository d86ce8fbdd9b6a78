"""One-off A/B experiments, each a script that writes its results under benchmarks/results (see each docstring)."""
