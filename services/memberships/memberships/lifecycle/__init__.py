"""The membership lifecycle over time: the scheduled sweep (grace, lapse), renewal
reminders, cancellation, and the electoral roll and counts at a date."""
