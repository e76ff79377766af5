"""Deployment: the inference model as plain tensors in and out (`export_model`), torch.export of
it, and its translation to standard ONNX ops (`onnx_ops`, `onnx_export`). Needs the `deploy`
extra (onnx, onnxscript, onnxruntime, openvino) only for the ONNX parts; see docs/deployment.md.
"""
