"""Reconciliation of the ledger against the bank's daily settlement report."""
