"""Data layer: dataset specs, readers for real formats, preprocessing, caching, synthetic data."""
