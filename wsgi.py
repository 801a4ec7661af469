"""WSGI entry point: `gunicorn wsgi:app`."""
from helpdesk import create_app

app = create_app()
