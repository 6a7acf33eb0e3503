"""The payment processor: drives payments through the bank, one recorded attempt at a time."""
