"""Engines tie I/O to the core: the stage pipeline, the local engine and the Ray engine, and the
input inspection, fingerprint and summary they share.

May import the base modules, ``execution``, ``core`` and ``io``.
"""
