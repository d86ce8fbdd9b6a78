"""What every benchmark shares: the machine, the corpus, the figures, the report, the backends and models."""
