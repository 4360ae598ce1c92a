"""Datasets, synthetic WoodScape-format data, class tables."""
