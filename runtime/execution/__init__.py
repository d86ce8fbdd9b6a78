"""Running the graph: onnxruntime sessions, provider profiles, denormals. The only users of
onnxruntime in the runtime.

May import the base modules only.
"""
