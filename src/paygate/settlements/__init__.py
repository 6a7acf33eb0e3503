"""Daily merchant settlements and their payout files."""
