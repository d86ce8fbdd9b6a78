"""Other libraries' objects: ``datasets`` and pandas, spaCy.

May import the base modules, ``core`` and ``io``.
"""
