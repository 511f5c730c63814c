"""`python -m producer`: serve the API with uvicorn."""

import uvicorn

from kubejob import logs
from kubejob.settings import load_or_exit
from producer.app import create_app
from producer.settings import Settings

settings = load_or_exit(Settings, "producer")
logs.configure(settings.log_level, secrets=settings.secrets())
uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.producer_port, log_config=None)
