"""One module per backend (torch, onnxruntime, tensorrt); heavy imports happen inside them."""
