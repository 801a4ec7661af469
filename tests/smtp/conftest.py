"""The SMTP tests use the real aiosmtpd servers and certificates from tests/conftest.py."""
