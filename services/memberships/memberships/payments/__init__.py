"""Payments: what a provider or a treasurer reports, and what becomes of it (manual entries,
remittance slips, refunds and chargebacks, recurring schedules)."""
