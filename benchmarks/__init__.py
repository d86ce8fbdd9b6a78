"""Benchmarks of tommer against the PyTorch reference path."""
