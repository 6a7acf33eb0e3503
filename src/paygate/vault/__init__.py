"""The card vault: card numbers sealed with AES-GCM under rotatable keys, CVCs under per-payment
keys that are destroyed once the authorization no longer needs them (PCI DSS 3.2, 3.5)."""
