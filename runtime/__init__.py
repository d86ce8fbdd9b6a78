"""The torch-free runtime: bundle reading, tokenization, inference, decoding, Parquet I/O."""
