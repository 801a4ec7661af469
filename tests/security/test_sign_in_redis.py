"""With REDIS_URL set, sign-in failures are counted in Redis, where every console worker sees them."""
from __future__ import annotations

import re
import uuid

import pytest


@pytest.fixture
def app_config(app_config, services) -> dict:
    app_config.update(REDIS_URL=services["HELPDESK_TEST_REDIS_URL"], LOGIN_LIMIT_ACCOUNT="3 per 15 minutes",
                      RATELIMIT_KEY_PREFIX=f"hd-test-{uuid.uuid4().hex}")
    return app_config


def test_failures_are_counted_in_redis(app, client, make_agent, services):
    import redis

    agent = make_agent()
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").get_data(as_text=True)).group(1)
    answers = [client.post("/login", data={"email": agent.email, "password": "guess", "csrf_token": token}).status_code
               for _ in range(4)]

    assert answers == [200, 200, 200, 429]
    with redis.Redis.from_url(services["HELPDESK_TEST_REDIS_URL"]) as connection:
        keys = connection.keys(f"*{app.config['RATELIMIT_KEY_PREFIX']}*")
        assert any(b"account:agent@example.test" in key for key in keys), keys
        connection.delete(*keys)
