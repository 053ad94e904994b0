"""Meeting reminders: contacts asks (meeting-reminder-requested), messaging emails the
registered person only with their consent for the purpose the request names."""
