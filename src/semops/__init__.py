"""SEMOPS."""
