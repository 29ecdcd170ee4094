"""``irecon export-model``: a trained model as one TorchScript or ONNX file (see :mod:`irecon.deploy.run`)."""
