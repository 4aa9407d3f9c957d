"""Evaluation protocols: landmark matching, transfer, regression, metrics."""
