"""Usage-event ingestion: body decoding, validation, id caches and idempotent storage."""
