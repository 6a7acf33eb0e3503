"""Notifications: signed webhooks, e-mail and SMS for every public event (DESIGN.md section 4)."""
