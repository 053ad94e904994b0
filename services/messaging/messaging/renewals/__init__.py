"""Renewal reminders: memberships asks (membership-renewal-requested), messaging emails
the member only with their consent for the membership purpose."""
