"""eagle: industrial visual inspection with a PatchCore-style expert, DBT thresholds and MLLM reasoning."""

__version__ = "0.1.0"
