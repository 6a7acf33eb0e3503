"""Customers: the payers of a merchant."""
