"""Backups of every service database and the vault, and restores that keep erasures
(`tribune backup`, `tribune restore`)."""
