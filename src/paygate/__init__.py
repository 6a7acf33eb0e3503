"""Paygate: a self-hostable payment gateway."""

__version__ = "0.1.0"
