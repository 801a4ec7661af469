"""Real SMTP servers for tests: aiosmtpd in-process, with test certificates and a recording handler.

Load it from a conftest with `load_smtp_servers()` in tests/smtp/conftest.py (it is a file, not a
package module, because the suite runs with --import-mode=importlib).
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import datetime
import email
import email.policy
import ipaddress
import json
import os
import socket
import ssl
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpdesk.mail.smtp import SmtpSettings

USERNAME = "agent@helpdesk.test"
PASSWORD = "Zq7-unlikely-Pa55word!"
SERVER_NAME = "mail.helpdesk.test"
SEND_AS_DENIED = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
NO_SUCH_USER = "550 5.1.1 No such user here"
TRY_LATER = "451 4.3.0 Temporary failure, try again later"
XOAUTH2_REFUSED = "535 5.7.8 Username and Password not accepted"
# What Gmail sends (base64 in a 334) when an XOAUTH2 token is refused, before its 535.
XOAUTH2_ERROR = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"})


# --- certificates -------------------------------------------------------------------------

@dataclass(frozen=True)
class TestCertificates:
    """PEM files: a CA, a server certificate it signed, and a self-signed one nobody trusts."""

    ca_file: str
    cert_file: str
    key_file: str
    untrusted_cert_file: str
    untrusted_key_file: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))


def _leaf(subject_key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, self_signed: bool) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(issuer)
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key.public_key()),
                       critical=False)
    )
    if not self_signed:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path) -> TestCertificates:
    """Write a test CA, a CA-signed server certificate and a self-signed one into folder."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Helpdesk Test CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        ), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _leaf(server_key, ca_name, ca_key, self_signed=False)
    untrusted_key = ec.generate_private_key(ec.SECP256R1())
    untrusted_cert = _leaf(untrusted_key, _name("localhost"), untrusted_key, self_signed=True)

    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (folder / "server.pem").write_bytes(server_cert.public_bytes(pem))
    _write_key(server_key, folder / "server.key")
    (folder / "untrusted.pem").write_bytes(untrusted_cert.public_bytes(pem))
    _write_key(untrusted_key, folder / "untrusted.key")
    return TestCertificates(
        ca_file=str(folder / "ca.pem"),
        cert_file=str(folder / "server.pem"),
        key_file=str(folder / "server.key"),
        untrusted_cert_file=str(folder / "untrusted.pem"),
        untrusted_key_file=str(folder / "untrusted.key"),
    )


def server_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """Return the server side TLS context for a certificate and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


# --- the server --------------------------------------------------------------------------

@dataclass(frozen=True)
class ReceivedMessage:
    """One message as the server took it: envelope and raw bytes."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


def introspect_token(url: str, token: str, timeout: float = 10.0) -> dict:
    """Ask an RFC 7662 endpoint about a token; URL may carry the client as http://ID:SECRET@host/...."""
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if parts.username:
        basic = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(basic.encode()).decode()
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    body = urllib.parse.urlencode({"token": token, "token_type_hint": "access_token"}).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read().decode())


class RecordingHandler:
    """aiosmtpd handler that keeps what it receives and refuses what it is told to.

    Servers that offer AUTH also offer XOAUTH2: the bearer token is checked against the test OAuth
    server's introspection endpoint (`introspection_url`, by default $HELPDESK_TEST_OAUTH_INTROSPECT)
    and must be active for the `user=` it names. A refusal goes like Gmail's: a 334 with the
    base64 JSON error, then 535 once the client answers with an empty line.
    """

    def __init__(
        self,
        *,
        refuse_senders: dict[str, str] | None = None,
        refuse_recipients: dict[str, str] | None = None,
        fail_data_first: int = 0,
        fail_data_reply: str = TRY_LATER,
        introspection_url: str | None = None,
    ) -> None:
        self.introspection_url = introspection_url
        self.xoauth2_logins: list[str] = []  # users whose XOAUTH2 token was accepted
        self.refuse_senders = {k.lower(): v for k, v in (refuse_senders or {}).items()}
        self.refuse_recipients = {k.lower(): v for k, v in (refuse_recipients or {}).items()}
        self.fail_data_left = fail_data_first
        self.fail_data_reply = fail_data_reply
        self.received: list[ReceivedMessage] = []
        self.servers: list[SMTP] = []  # one per connection that said EHLO/HELO
        self.data_attempts = 0
        self._lock = threading.Lock()

    def _saw(self, server: SMTP) -> None:
        with self._lock:
            if not any(s is server for s in self.servers):
                self.servers.append(server)

    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """SASL XOAUTH2: base64 of "user=LOGIN\\x01auth=Bearer TOKEN\\x01\\x01", checked by introspection."""
        if len(args) == 2:
            try:
                raw = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        else:
            reply = await server.challenge_auth("")
            if reply is MISSING:  # aiosmtpd has already answered ("*" or bad base64)
                return AuthResult(success=False, handled=True)
            raw = reply
        fields = dict(part.split("=", 1) for part in raw.decode("utf-8", "replace").split("\x01") if "=" in part)
        user = fields.get("user", "")
        auth = fields.get("auth", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        url = self.introspection_url or os.environ.get("HELPDESK_TEST_OAUTH_INTROSPECT", "")
        if user and token and url:
            try:
                answer = await asyncio.get_running_loop().run_in_executor(None, introspect_token, url, token)
            except (OSError, ValueError):
                answer = {}
            if answer.get("active") is True and str(answer.get("username", "")).lower() == user.lower():
                with self._lock:
                    self.xoauth2_logins.append(user)
                return AuthResult(success=True, auth_data=user)
        if await server.challenge_auth(XOAUTH2_ERROR) is MISSING:
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False, message=XOAUTH2_REFUSED)

    async def handle_EHLO(self, server: SMTP, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        self._saw(server)
        session.host_name = hostname
        return responses

    async def handle_HELO(self, server: SMTP, session: Any, envelope: Any, hostname: str) -> str:
        self._saw(server)
        session.host_name = hostname
        return f"250 {server.hostname}"

    async def handle_MAIL(self, server: SMTP, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        refusal = self.refuse_senders.get(address.lower())
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        refusal = self.refuse_recipients.get(address.lower())
        if refusal:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Any, envelope: Any) -> str:
        with self._lock:
            self.data_attempts += 1
            if self.fail_data_left > 0:
                self.fail_data_left -= 1
                return self.fail_data_reply
            self.received.append(ReceivedMessage(
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(envelope.original_content or b""),
            ))
            number = len(self.received)
        return f"250 2.0.0 Message {number} accepted for delivery"


class _Authenticator:
    """Accept exactly one username and password; a wrong one gets aiosmtpd's 535."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username.encode()
        self.password = password.encode()

    def __call__(self, server: SMTP, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        if (isinstance(auth_data, LoginPassword) and auth_data.login == self.username
                and auth_data.password == self.password):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


class _Controller(Controller):
    """Controller on a port the OS picks (port 0), read back once the server listens."""

    def _trigger_server(self) -> None:
        assert self.server is not None
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


@dataclass
class SmtpTestServer:
    """A running test SMTP server; `settings()` gives the client settings that reach it."""

    kind: str
    host: str
    port: int
    security: str
    handler: RecordingHandler
    controller: _Controller
    username: str = ""
    password: str = ""
    ca_file: str | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def received(self) -> list[ReceivedMessage]:
        return self.handler.received

    @property
    def connections(self) -> int:
        """Count the connections that greeted the server (EHLO/HELO)."""
        return len(self.handler.servers)

    def settings(self, **overrides: Any) -> SmtpSettings:
        """Return SmtpSettings that send through this server, with overrides applied."""
        values: dict[str, Any] = dict(
            host=self.host, port=self.port, security=self.security, username=self.username,
            password=self.password, ca_file=self.ca_file, timeout=10.0,
            local_hostname="client.helpdesk.test",
        )
        values.update(overrides)
        return SmtpSettings(**values)

    def drop_connections(self) -> None:
        """Close every open client connection from the server side, as an idle timeout would."""
        async def close_all() -> None:
            for server in self.handler.servers:
                if server.transport is not None and not server.transport.is_closing():
                    server.transport.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close_all(), self.controller.loop).result()

    def stop(self) -> None:
        """Finish every client session, then stop the server thread."""
        if self._stopped:
            return
        self._stopped = True

        async def finish_sessions() -> None:
            # Controller.stop() alone leaves half-open sessions' tasks pending at loop close.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(finish_sessions(), self.controller.loop).result()
        self.controller.stop()


SERVER_KINDS = ("starttls", "ssl", "plain", "untrusted", "picky", "flaky")


def start_server(kind: str, certs: TestCertificates, *, fail_data_first: int = 0,
                 refuse_senders: dict[str, str] | None = None,
                 refuse_recipients: dict[str, str] | None = None,
                 introspection_url: str | None = None) -> SmtpTestServer:
    """Start one of the test servers on 127.0.0.1.

    starttls: STARTTLS, AUTH only after TLS (CA-signed certificate); ssl: implicit TLS + AUTH;
    plain: no TLS, no AUTH; untrusted: STARTTLS + AUTH with the self-signed certificate;
    picky: plain, refuses senders/recipients (by default a send-as denial for
    "other@helpdesk.test" and 550 for "nobody@customer.test"); flaky: plain, answers DATA with
    451 for the first `fail_data_first` messages.
    Where AUTH is offered (starttls, ssl, untrusted), XOAUTH2 is too: a token the OAuth test server
    says is active for the user (introspection_url, default $HELPDESK_TEST_OAUTH_INTROSPECT).
    """
    if kind not in SERVER_KINDS:
        raise ValueError(f"kind must be one of {SERVER_KINDS}")
    if kind == "picky":
        refuse_senders = refuse_senders or {"other@helpdesk.test": SEND_AS_DENIED}
        refuse_recipients = refuse_recipients or {"nobody@customer.test": NO_SUCH_USER}
    handler = RecordingHandler(refuse_senders=refuse_senders, refuse_recipients=refuse_recipients,
                               fail_data_first=fail_data_first, introspection_url=introspection_url)
    options: dict[str, Any] = {"server_hostname": SERVER_NAME}
    security, username, password, ca_file = "none", "", "", None
    if kind in ("starttls", "untrusted"):
        cert, key = ((certs.cert_file, certs.key_file) if kind == "starttls"
                     else (certs.untrusted_cert_file, certs.untrusted_key_file))
        options.update(tls_context=server_tls_context(cert, key), require_starttls=True,
                       authenticator=_Authenticator(USERNAME, PASSWORD))
        security, username, password = "starttls", USERNAME, PASSWORD
        ca_file = certs.ca_file if kind == "starttls" else None
    elif kind == "ssl":
        # aiosmtpd only knows about STARTTLS; on an implicit-TLS port the whole session is TLS.
        options.update(ssl_context=server_tls_context(certs.cert_file, certs.key_file),
                       auth_require_tls=False, authenticator=_Authenticator(USERNAME, PASSWORD))
        security, username, password, ca_file = "ssl", USERNAME, PASSWORD, certs.ca_file
    controller = _Controller(handler, hostname="127.0.0.1", port=0, **options)
    controller.start()
    return SmtpTestServer(kind=kind, host="127.0.0.1", port=controller.port, security=security,
                          handler=handler, controller=controller, username=username,
                          password=password, ca_file=ca_file)


# --- sockets that are not SMTP servers ----------------------------------------------------

class SilentServer:
    """A TCP port that accepts connections and never says a word (no SMTP greeting)."""

    def __init__(self) -> None:
        # The kernel completes the handshake for queued connections; nobody ever reads or writes.
        self._socket = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()


class ClosedPort:
    """A port bound but not listening, so connecting to it is refused, and nobody else gets it."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]

    def close(self) -> None:
        self._socket.close()
