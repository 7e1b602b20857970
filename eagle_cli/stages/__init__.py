"""Stages: plain functions ``run_<stage>(inputs, params, *, context) -> ArtifactRef``."""
