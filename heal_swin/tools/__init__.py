"""Command-line tools: projection preview."""
