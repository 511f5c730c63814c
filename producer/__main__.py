"""`python -m producer`: serve the API with uvicorn."""

import uvicorn

from producer import logs
from producer.app import create_app
from producer.settings import Settings

settings = Settings()
logs.configure(settings.log_level)
uvicorn.run(create_app(settings), host="0.0.0.0", port=settings.producer_port, log_config=None)
