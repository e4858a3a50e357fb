"""HTTP: health, readiness and metrics endpoints, and the JSON APIs."""
