"""The producer: turns an uploaded CSV into one persistent RabbitMQ message per row."""
