"""Readers for real annotation formats; importing this package registers every KIND."""
