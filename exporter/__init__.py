"""Export a layer-truncated backbone and a ToMMeR head as one validated ONNX bundle (needs torch)."""
