"""The payment domain: state machine, service (use cases), HTTP routes."""
