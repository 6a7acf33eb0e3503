"""Shared plumbing: database, bus, cache, observability."""
