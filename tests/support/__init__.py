"""Shared helpers for tests: harnesses for real peers (the Go registry, skopeo)."""
