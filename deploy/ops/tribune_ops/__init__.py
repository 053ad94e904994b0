"""Tribune's operations CLI: what an ops team runs against a live platform."""
