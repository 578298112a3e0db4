"""finsent training: fine-tune, evaluate, export to ONNX, quantise, write bundles.

Imports `monitor.model.normalize` and `monitor.model.bundle` (one normalisation, one
bundle format for training and serving); never imported by `monitor`.
"""
