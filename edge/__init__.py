"""The on-device model: building edge artifacts (distil, export to ONNX, quantise to
int8, sign) and running them (verify, install, infer with onnxruntime).

The runtime side must import with only numpy and onnxruntime installed: no torch.
"""

import fedge  # noqa: F401  (first: it sets OpenMP's wait policy before anything loads torch)
