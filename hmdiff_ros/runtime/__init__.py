"""Inference backends (PyTorch, ONNX Runtime, TensorRT) behind one runner protocol. ROS-free core."""
