"""Query limits, static query cost and the per-viewer rate limit."""
