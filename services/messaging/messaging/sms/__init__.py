"""The SMS channel: segment counting, provider adapters and delivery receipts."""
