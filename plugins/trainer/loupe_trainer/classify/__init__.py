"""Image classification from tens of samples: data loading, augmentation, transfer learning, ONNX export."""
