"""The model-side core: texts to mentions. Tokenization, windows, batching, the annotator's stages,
spans, decoding, mentions and their Arrow columns.

May import the base modules (``bundle``, ``errors``, ``options``) and ``execution``; owns no file
I/O and never imports ``io``, ``engines``, ``integrations``, ``quality`` or ``cli``.
"""
