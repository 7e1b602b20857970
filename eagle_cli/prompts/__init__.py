"""Prompt construction: box images from anomaly maps, text templates, questions, answer parsing."""
