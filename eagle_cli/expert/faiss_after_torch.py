"""faiss, imported after torch, so that the two share one OpenMP runtime.

faiss-cpu's wheel carries its own OpenMP runtime. Imported before torch, a process holds two, and after each
parallel region one runtime's workers spin on the cores the other's need: fit-threshold, which alternates torch
arithmetic with faiss searches, took 1.3–1.45× as long at 1024 px on 2 cores (BENCHMARKS.md, "One OpenMP
runtime"). torch makes its runtime global as it loads, and faiss imported after it runs on that one. Every eagle
module that uses faiss beside torch imports it from here (the exported runtime, which has no torch, imports faiss
itself).
"""

import torch  # noqa: F401  (first: see above)

# isort: split
import faiss

__all__ = ["faiss"]
