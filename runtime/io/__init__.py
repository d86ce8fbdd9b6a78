"""Files and locations: input discovery, sources (Parquet, JSON Lines), URLs, row selection, the
Parquet part store, file identity and output metadata.

May import the base modules only: never ``core`` (no model) nor ``execution`` (no onnxruntime).
"""
