"""Fixtures for the Outbound (SMTP) screen: the app trusts the test servers' CA."""
import pytest


@pytest.fixture
def app_config(trust_test_ca) -> dict:
    return trust_test_ca
