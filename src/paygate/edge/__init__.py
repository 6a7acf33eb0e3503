"""The gateway's edge, in front of every handler: who is calling and with what rights (keys and
scopes), how much (rate limits and quotas), in which API version, cached status reads, card
tokenization for browsers, request limits and security headers."""
