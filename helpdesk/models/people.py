"""Agents who answer tickets, and the contacts and customers who write in."""
from __future__ import annotations

import hmac
import secrets
from datetime import datetime
from functools import cache

from flask_login import UserMixin
from sqlalchemy import ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates
from werkzeug.security import check_password_hash, generate_password_hash

from helpdesk.extensions import db
from helpdesk.models._time import utcnow

ROLES = ("admin", "agent")


@cache
def _stand_in_hash() -> str:
    """Return a hash of a random password, made like real ones, to check unknown emails against."""
    return generate_password_hash(secrets.token_urlsafe(32))


class Agent(UserMixin, db.Model):
    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(256), default="")
    role: Mapped[str] = mapped_column(String(20), default="agent")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Part of the id the session and remember-me cookies carry; replaced at sign-out, which ends
    # every copy of those cookies.
    session_token: Mapped[str] = mapped_column(String(64), default=lambda: secrets.token_urlsafe(32),
                                               server_default="")

    @validates("email")
    def _lower_email(self, key, value: str) -> str:
        return value.strip().lower()

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive agents
        return self.active

    def get_id(self) -> str:
        """Return what Flask-Login keeps in the cookies: the id and the current session token."""
        return f"{self.id}:{self.session_token}"

    def has_session_token(self, token: str) -> bool:
        """Tell whether a cookie's token is this agent's current one."""
        return bool(self.session_token) and hmac.compare_digest(self.session_token, token)

    def end_sessions(self) -> None:
        """Replace the session token: every session and remember-me cookie issued so far stops working."""
        self.session_token = secrets.token_urlsafe(32)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return bool(self.password_hash) and check_password_hash(self.password_hash, password)

    @classmethod
    def authenticate(cls, email: str, password: str) -> Agent | None:
        """Return the active agent with this email and password, else None, taking as long either way.

        An unknown email is checked against a stand-in hash: answering it faster would tell
        which accounts exist.
        """
        agent = db.session.scalar(db.select(cls).filter_by(email=email.strip().lower()))
        stored = agent.password_hash if agent is not None and agent.password_hash else _stand_in_hash()
        matches = check_password_hash(stored, password)
        return agent if matches and agent is not None and agent.password_hash and agent.active else None


class Invitation(db.Model):
    """An emailed invitation for a new agent; the link's signed token names this row."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(254))
    role: Mapped[str] = mapped_column(String(20), default="agent")
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))

    invited_by: Mapped[Agent | None] = relationship(foreign_keys=[invited_by_id])


class Customer(db.Model):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    notes: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    domains: Mapped[list[CustomerDomain]] = relationship(
        back_populates="customer", cascade="all, delete-orphan", order_by="CustomerDomain.domain")
    contacts: Mapped[list[Contact]] = relationship(back_populates="customer", order_by="Contact.name")


class CustomerDomain(db.Model):
    """A mail domain whose senders belong to a customer (never a free-mail domain)."""

    __tablename__ = "customer_domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    domain: Mapped[str] = mapped_column(String(253), unique=True)

    customer: Mapped[Customer] = relationship(back_populates="domains")

    @validates("domain")
    def _lower_domain(self, key, value: str) -> str:
        return value.strip().lower().lstrip("@")


class Contact(db.Model):
    """A person who writes to support; email is unique whatever its case."""

    __tablename__ = "contacts"
    __table_args__ = (Index("ix_contacts_name", "name", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(254), unique=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    customer: Mapped[Customer | None] = relationship(back_populates="contacts")

    @validates("email")
    def _lower_email(self, key, value: str) -> str:
        # Stored lowercased: the unique index then is case-insensitive on every database.
        return value.strip().lower()

    @property
    def display_name(self) -> str:
        return self.name or self.email

