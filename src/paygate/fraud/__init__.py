"""Fraud screening of every payment before it reaches the bank."""
