"""On-disk formats, one module per artifact kind: its file names, writer and readers.

``features`` (safetensors, memory-mapped on read), ``bank`` (safetensors + a faiss index),
``calibration``, ``threshold``, ``scores`` (JSON Lines + map shards), ``prompts``, ``answers`` and
``report``. Stages and the report read and write artifacts only through these modules, and no
stage imports another. The modules for tables (calibration, threshold, prompts, answers, report)
import neither torch nor faiss.
"""
