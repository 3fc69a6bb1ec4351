"""Storage: Tortoise models and migrations, database set-up, the usage cube, catalogue queries."""
