"""Run records (JSON) and report pages."""
