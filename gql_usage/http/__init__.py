"""The HTTP layer: middleware, error answers, probes, the service API and the server."""
