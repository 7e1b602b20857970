"""eagle: industrial visual inspection with a PatchCore-style expert, DBT thresholds and MLLM reasoning."""

__version__ = "0.5.0"


def __getattr__(name: str):
    # `from eagle_cli import Expert` without making `import eagle_cli` (and the CLI's start) load torch.
    if name == "Expert":
        from eagle_cli.expert.model import Expert

        return Expert
    if name == "ExportedExpert":
        from eagle_cli.export.runtime import ExportedExpert

        return ExportedExpert
    if name == "load_expert":
        from eagle_cli.formats.expert import load_expert

        return load_expert
    raise AttributeError(f"module 'eagle_cli' has no attribute {name!r}")
