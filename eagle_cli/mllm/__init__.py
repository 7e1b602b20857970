"""Multimodal LLM backends and CAAS."""
