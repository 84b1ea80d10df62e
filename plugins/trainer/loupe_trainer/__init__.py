"""Loupe trainers: torch transfer learning, PatchCore-class anomaly detection, ONNX export and optimisation."""
