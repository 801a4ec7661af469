"""The reference helpdesk on this machine: django-helpdesk's IMAP ingestion of the same mails.

Issue 4 asks for 10x "a well-known Python helpdesk" (55 mails/s on its reference machine). These
2-core machines run everything slower than that one, so the bench measures that helpdesk here,
in the same run as ours: django-helpdesk (pinned below, from PyPI, in a virtualenv of its own
under .bench/, outside the project's dependencies), Django's SQLite backend, attachments in a
local folder, its mails to submitters kept in memory (Django's locmem backend). All of these
spare it work ours does (S3, a durable outbox), so the ratio errs in its favour.

Its `process_queue()` fetches each mail with its own FETCH, makes the ticket, then flags the mail
\\Deleted and expunges, so every run gets a fresh copy of the mails in a folder of its own.

Imported by bench/inbound.py (--reference); run as a script by the reference virtualenv's Python.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PACKAGES = ["django-helpdesk==2.6.1", "pinax-teams==3.0.1"]  # its migrations need pinax-teams
ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".bench" / "django-helpdesk"


def ensure_installed() -> Path:
    """Make the reference virtualenv once (about 30 s); return its Python."""
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if marker.exists() and marker.read_text() == " ".join(PACKAGES):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    marker.write_text(" ".join(PACKAGES))
    return python


def measure(python: Path, host: str, port: int, username: str, password: str, folder: str) -> dict:
    """Run django-helpdesk once over `folder` (which it empties) on a fresh database; return its figures."""
    with tempfile.TemporaryDirectory(prefix="hd-reference-") as workdir:
        done = subprocess.run([str(python), __file__, host, str(port), username, password, folder, workdir],
                              capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"django-helpdesk failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run(host: str, port: str, username: str, password: str, folder: str, workdir: str) -> None:
    """In the reference virtualenv: set Django up, poll `folder` once, print the figures as JSON."""
    import logging

    import django
    from django.conf import settings
    from django.urls import include, path

    settings.configure(
        SECRET_KEY="bench", DEBUG=False, ALLOWED_HOSTS=["*"], USE_TZ=True, SITE_ID=1,
        INSTALLED_APPS=["django.contrib.admin", "django.contrib.auth", "django.contrib.contenttypes",
                        "django.contrib.sessions", "django.contrib.messages", "django.contrib.staticfiles",
                        "django.contrib.sites", "django.contrib.humanize", "rest_framework", "account",
                        "pinax.invitations", "pinax.teams", "reversion", "helpdesk"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.path.join(workdir, "db.sqlite")}},
        MEDIA_ROOT=os.path.join(workdir, "media"), DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        EMAIL_BACKEND="django.core.mail.backends.locmem.EmailBackend", ROOT_URLCONF=__name__,
        TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True,
                    "OPTIONS": {"context_processors": ["django.template.context_processors.request",
                                                       "django.contrib.auth.context_processors.auth",
                                                       "django.contrib.messages.context_processors.messages"]}}],
        LOGGING={"version": 1, "disable_existing_loggers": False, "root": {"level": "ERROR"}},
    )
    django.setup()
    globals()["urlpatterns"] = [path("helpdesk/", include("helpdesk.urls", namespace="helpdesk"))]  # mails link tickets
    from django.core.management import call_command
    from helpdesk.email import process_queue
    from helpdesk.models import FollowUp, Queue, Ticket

    call_command("migrate", verbosity=0)
    queue = Queue.objects.create(
        title="Bench", slug="bench", allow_email_submission=True, email_box_type="imap", email_box_ssl=True,
        email_box_host=host, email_box_port=int(port), email_box_user=username, email_box_pass=password,
        email_box_imap_folder=folder)
    logger = logging.getLogger("reference")
    logger.setLevel(logging.ERROR)
    started, cpu_started = time.perf_counter(), time.process_time()
    process_queue(queue, logger)
    print(json.dumps({"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
                      "tickets": Ticket.objects.count(), "followups": FollowUp.objects.count()}))


if __name__ == "__main__":
    _run(*sys.argv[1:7])
