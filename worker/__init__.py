"""The worker: drains the queue with manual acks and exits 0 once it is empty."""
