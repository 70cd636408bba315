"""The server side of edge models (needs torch): distil the global model into the task's
student, export both to ONNX, quantise the student to int8, and sign the artifact."""
