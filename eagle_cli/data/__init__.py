"""Dataset layouts turned into sorted sample tables, plus a synthetic generator."""

from eagle_cli.data.sample import Sample
from eagle_cli.data.source import DataSource

__all__ = ["DataSource", "Sample"]
