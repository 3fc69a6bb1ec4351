"""Per-request batched lookups (aiodataloader), one loader per module."""
