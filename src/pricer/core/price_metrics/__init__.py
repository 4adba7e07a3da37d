"""Pricer's price metrics as an ``evaluate`` metric module; also importable as a package."""
