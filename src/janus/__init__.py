"""Janus: a Redis-native distributed rate limiter and retry coordinator."""

__version__ = "0.1.0"
