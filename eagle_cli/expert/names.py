"""Backbone names, importable without torch (the CLI's help lists them)."""

BACKBONE_NAMES = ("wide_resnet50_2", "resnet18", "mobilenet_v2")
