"""Temporary: rows written through the ORM (callers move to plain objects)."""
from __future__ import annotations

from typing import Any, TypeVar

from helpdesk.extensions import db

M = TypeVar("M")


def insert_row(model: type[M], values: dict[str, Any], **related: Any) -> M:
    obj = model(**values)
    db.session.add(obj)
    db.session.flush()
    return obj


def insert_id(model: type, values: dict[str, Any]) -> int:
    return insert_row(model, values).id
