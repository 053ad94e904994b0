"""Tribune contacts service: the people a federation knows and where their data came from."""
