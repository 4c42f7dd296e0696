"""Errors for bad input: each message names the offending key or value and what is allowed."""


class ConfigError(ValueError):
    """A configuration value out of its allowed range, an unknown model or an unusable dataset."""


class LossNotFiniteError(ConfigError):
    """A training loss term became nan or infinite (usually a learning rate or loss weight too large)."""


class DistributedError(RuntimeError):
    """A rank of a distributed run failed, died or timed out; the message names the rank and the cause."""
