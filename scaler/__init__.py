"""Starts Kubernetes Jobs of workers when the RabbitMQ queue has a backlog."""
