"""``python -m memberships.live``: the live figures process."""

from memberships.live.main import main

main()
