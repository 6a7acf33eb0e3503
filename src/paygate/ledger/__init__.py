"""The double-entry ledger: every movement of money is a balanced journal entry."""
