"""Usage analytics: planning reads of the cube and raw events, their SQL, breakdown rows."""
