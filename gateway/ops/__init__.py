"""What operators see and drive: the admin REST API, Prometheus metrics, logging."""
