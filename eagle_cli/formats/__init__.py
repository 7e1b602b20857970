"""On-disk formats, one module per artifact kind: its file names, its typed rows and records, its writer and readers.

``features`` (safetensors, memory-mapped on read), ``bank`` (safetensors; the exact index is built on
opening), ``calibration``, ``threshold``, ``scores`` (JSON Lines + map shards), ``prompts``, ``answers``
and ``report``; ``expert`` loads the expert a threshold artifact describes. Only these modules read
manifest keys; the modules for tables (calibration, threshold, prompts, answers, report) import
neither torch nor faiss.
"""
