"""Model-free measures of mentions: evaluation against gold spans, BIO files, the HTML view.

May import the base modules and ``io``; never ``core`` or ``execution``, so ``tommer-eval`` and
``tommer-show`` need no model and no onnxruntime.
"""
