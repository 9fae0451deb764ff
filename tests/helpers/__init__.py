"""Helpers the tests share: synthetic data and networks, tiny matrices, subprocess drivers."""
