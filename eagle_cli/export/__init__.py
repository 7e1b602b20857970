"""A fitted expert as a folder a line PC scores with: an ONNX feature graph, the bank, the rule, τ and a manifest.

``eagle export`` writes it (writer.py, with torch); :class:`~eagle_cli.export.runtime.ExportedExpert` scores with
it using onnxruntime, numpy and faiss-cpu only (runtime.py never imports torch).
"""
