"""The torch-free runtime, in layers (docs/design.md gives the rules, tests/runtime/test_layers.py checks them).

- base modules: ``errors``, ``bundle`` (the manifest: the one contract with the exporter),
  ``options`` (every option and default, resolved once) and ``fields`` (Arrow columns by
  dotted name, string columns as text);
- ``execution`` (onnxruntime), ``core`` (texts to mentions), ``io`` (files), ``engines`` (the
  pipeline, local and Ray), ``integrations`` (datasets, pandas, spaCy), ``quality`` (model-free
  measures), ``cli`` (the commands);
- ``annotator``: the public ``Annotator``, the core one plus a method per adapter.
"""
