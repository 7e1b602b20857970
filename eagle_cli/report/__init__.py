"""The HTML/CSV/Markdown report over one or more runs."""
