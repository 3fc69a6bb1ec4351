"""Usage analytics: which cube units and raw events answer a question, its SQL, breakdown rows."""
