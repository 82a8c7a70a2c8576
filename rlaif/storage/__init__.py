"""Plumbing that keeps things on disk: atomic writes, the answer cache, the built-in files."""
