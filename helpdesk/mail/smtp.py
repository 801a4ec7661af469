"""An SMTP session for outgoing mail: one verified connection, failures in plain words."""
from __future__ import annotations

import copy
import logging
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import getaddresses, make_msgid
from types import TracebackType

from helpdesk.mail.compose import OutgoingMail, compose
from helpdesk.mail.diagnosis import Diagnosis
from helpdesk.mail.oauth import OAuthError, xoauth2_string
from helpdesk.mail.tls import client_context

log = logging.getLogger(__name__)

SECURITY_MODES = ("starttls", "ssl", "none")
_SUGGESTED_PORTS = {"starttls": 587, "ssl": 465, "none": 25}
# A probe only asks "does this port speak TLS / plain SMTP?"; a live server answers at once.
_PROBE_TIMEOUT = 5.0

GMAIL_HINT = (
    "Sign in with OAuth 2.0; for a password sign-in with 2-Step Verification on, Gmail needs an "
    "App Password: create one at myaccount.google.com/apppasswords"
)
MICROSOFT_365_HINT = (
    "Authenticated SMTP must be enabled for this mailbox: Microsoft 365 admin center → Users → "
    "Active users → user → Mail → Manage email apps → Authenticated SMTP. Microsoft turns Basic "
    "authentication for SMTP AUTH off by default for existing tenants at the end of December 2026 "
    "(refusals then read 550 5.7.30): sign in with OAuth 2.0."
)

PROVIDER_PRESETS: dict[str, dict[str, object]] = {
    "gmail": {
        "label": "Gmail / Google Workspace",
        "host": "smtp.gmail.com",
        "port": 587,
        "security": "starttls",
        "oauth_provider": "google",
        "note": GMAIL_HINT,
    },
    "microsoft365": {
        "label": "Microsoft 365",
        "host": "smtp.office365.com",
        "port": 587,
        "security": "starttls",
        "oauth_provider": "microsoft",
        "note": MICROSOFT_365_HINT,
    },
}


def suggested_port(security: str) -> int:
    """Return the usual port for a security mode: 587 STARTTLS, 465 SSL/TLS, 25 none."""
    try:
        return _SUGGESTED_PORTS[security]
    except KeyError:
        raise ValueError(f"security must be one of {SECURITY_MODES}, not {security!r}") from None


def provider_hint(host: str) -> str:
    """Return provider-specific login advice for an SMTP host, or "" when there is none."""
    host = host.strip().lower().rstrip(".")
    if host.endswith(("gmail.com", "googlemail.com")):
        return GMAIL_HINT
    if "office365.com" in host or "outlook.com" in host:
        return MICROSOFT_365_HINT
    return ""


@dataclass
class SmtpSettings:
    """Where and how to send outgoing mail; the password stays out of repr."""

    host: str
    port: int
    security: str  # "starttls" | "ssl" | "none"
    username: str = ""
    password: str = field(default="", repr=False)
    verify_tls: bool = True
    timeout: float = 15.0
    ca_file: str | None = None
    local_hostname: str | None = None
    oauth_token: str = field(default="", repr=False)  # sign in with XOAUTH2 instead of the password
    # Given the token the server refused, return a fresh one (or raise OAuthError): one more try.
    oauth_renew: Callable[[str], str] | None = field(default=None, repr=False)
    oauth_refusal: str = ""  # what to tell an admin when the server refuses a fresh token too

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {SECURITY_MODES}, not {self.security!r}")


class SmtpError(Exception):
    """An SMTP step failed; `diagnosis` says so in words an admin can act on."""

    def __init__(
        self,
        kind: str,
        diagnosis: str,
        server_reply: str = "",
        *,
        code: int | None = None,
        transient: bool | None = None,
        refused: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{diagnosis} ({server_reply})" if server_reply else diagnosis)
        self.kind = kind
        self.diagnosis = diagnosis
        self.server_reply = server_reply
        self.code = code
        if transient is None:
            # A reply code decides; without one, only connection trouble is worth retrying.
            transient = 400 <= code < 500 if code is not None else kind in ("refused", "timeout")
        self.transient = transient
        self.refused = refused or {}  # recipient -> server reply, for kind "recipient"


def _reply(code: int, text: bytes | str) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    # Multi-line replies come joined by "\n"; one line reads better in an admin page.
    return f"{code} {' '.join(text.split())}".strip()


def _ehlo_reply(smtp: smtplib.SMTP) -> str:
    """Return the server's EHLO answer on one line: the extensions it offers."""
    lines = (smtp.ehlo_resp or smtp.helo_resp or b"").decode("utf-8", "replace").splitlines()
    return "250 " + "; ".join(line.strip() for line in lines) if lines else ""


def _speaks_implicit_tls(settings: SmtpSettings) -> bool:
    """Tell whether the port completes a TLS handshake before any SMTP greeting."""
    context = ssl.create_default_context()
    # Only the protocol matters here; trust is checked by the real connection.
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    timeout = min(settings.timeout, _PROBE_TIMEOUT)
    try:
        with socket.create_connection((settings.host, settings.port), timeout=timeout) as raw:
            with context.wrap_socket(raw, server_hostname=settings.host):
                return True
    except OSError:
        return False


def _speaks_plain_smtp(settings: SmtpSettings) -> bool:
    """Tell whether the port greets in plain text, as STARTTLS and unencrypted ports do."""
    timeout = min(settings.timeout, _PROBE_TIMEOUT)
    try:
        with socket.create_connection((settings.host, settings.port), timeout=timeout) as raw:
            greeting = b""
            while len(greeting) < 4 and b"\n" not in greeting:
                chunk = raw.recv(512)
                if not chunk:
                    break
                greeting += chunk
    except OSError:
        return False
    return greeting[:3].isdigit()


class SmtpSession:
    """One logged-in SMTP connection for a burst of messages, used as a context manager."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpSession:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def open(self) -> None:
        """Connect, greet, secure and log in; raise SmtpError when any step fails."""
        smtp = self._connect()
        try:
            with self._errors("saying EHLO"):
                code, reply = smtp.ehlo()
            if code != 250:
                # Very old servers know only HELO; smtplib falls back the same way.
                with self._errors("saying HELO"):
                    code, reply = smtp.helo()
                if code != 250:
                    raise SmtpError("protocol", f"{self.where} rejected our greeting.",
                                    _reply(code, reply), code=code)
            if self.settings.security == "starttls":
                self._starttls(smtp)
            if self.settings.username:
                self._login(smtp)
        except BaseException:
            smtp.close()
            raise
        self._smtp = smtp

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        try:
            with self._errors("waiting for the server's greeting"):
                if s.security == "ssl":
                    return smtplib.SMTP_SSL(s.host, s.port, local_hostname=s.local_hostname,
                                            timeout=s.timeout, context=client_context(s.ca_file, s.verify_tls))
                return smtplib.SMTP(s.host, s.port, local_hostname=s.local_hostname,
                                    timeout=s.timeout)
        except SmtpError as exc:
            # Both wrong-security cases look like something else (a TLS error, a silent or
            # closing server), so ask the port what it really speaks before blaming it.
            if s.security == "ssl" and exc.kind == "tls" and _speaks_plain_smtp(s):
                raise SmtpError(
                    "wrong_security",
                    f"{self.where} greets in plain text, so SSL/TLS is the wrong security for it: "
                    f"port {s.port} expects STARTTLS. Choose STARTTLS, or use port 465 for SSL/TLS.",
                    exc.server_reply,
                    transient=False,
                ) from exc
            if s.security != "ssl" and exc.kind in ("timeout", "protocol") and _speaks_implicit_tls(s):
                raise SmtpError(
                    "wrong_security",
                    f"{self.where} waits for a TLS handshake before it says anything: port {s.port} "
                    f"expects SSL/TLS. Choose SSL/TLS, or use port 587 for STARTTLS.",
                    exc.server_reply,
                    transient=False,
                ) from exc
            raise

    def _starttls(self, smtp: smtplib.SMTP) -> None:
        if not smtp.has_extn("starttls"):
            raise SmtpError(
                "wrong_security",
                f"{self.where} does not offer STARTTLS, so this connection cannot be encrypted. "
                "Choose SSL/TLS if the port expects it (usually 465); choose None only on a "
                "network you trust.",
                _ehlo_reply(smtp),
                transient=False,
            )
        with self._errors("starting TLS (STARTTLS)"):
            smtp.starttls(context=client_context(self.settings.ca_file, self.settings.verify_tls))
        # smtplib forgets the extensions after STARTTLS; the second EHLO is required by RFC 3207.
        with self._errors("saying EHLO after STARTTLS"):
            smtp.ehlo()

    def _login(self, smtp: smtplib.SMTP) -> None:
        s = self.settings
        if not smtp.has_extn("auth"):
            if smtp.has_extn("starttls") and s.security == "none":
                raise SmtpError(
                    "no_auth",
                    f"{self.where} offers login (AUTH) only after STARTTLS. Choose STARTTLS.",
                    _ehlo_reply(smtp),
                    transient=False,
                )
            raise SmtpError(
                "no_auth",
                f"{self.where} offers no login (AUTH), yet a username is set. Leave the username "
                "empty if this server relays for us without login, or check host and port "
                "(port 587 usually requires login).",
                _ehlo_reply(smtp),
                transient=False,
            )
        if s.oauth_token:
            self._oauth2_login(smtp)
            return
        try:
            with self._errors("logging in"):
                smtp.login(s.username, s.password)
        except SmtpError as exc:
            if type(exc.__cause__) is smtplib.SMTPException:
                offered = smtp.esmtp_features.get("auth", "").strip()
                raise SmtpError(
                    "no_auth",
                    f"{self.where} offers only login methods we do not support ({offered}).",
                    exc.server_reply,
                    transient=False,
                ) from exc
            raise

    def _oauth2_login(self, smtp: smtplib.SMTP) -> None:
        """Sign in with AUTH XOAUTH2; a refused token is renewed once and tried again."""
        s = self.settings
        if "XOAUTH2" not in smtp.esmtp_features.get("auth", "").upper().split():
            raise SmtpError("no_auth", f"{self.where} does not offer OAuth sign-in (AUTH XOAUTH2). Check the "
                            "host, or sign in with a password.", _ehlo_reply(smtp), transient=False)
        for attempt in (1, 2):
            try:
                with self._errors("logging in"):
                    # After a refusal the server sends an error challenge; an empty answer ends the exchange.
                    smtp.auth("XOAUTH2", lambda challenge=None: "" if challenge else xoauth2_string(
                        s.username, s.oauth_token))
                return
            except SmtpError as exc:
                if exc.kind != "auth":
                    raise
                if attempt == 1 and s.oauth_renew is not None:
                    try:
                        fresh = s.oauth_renew(s.oauth_token)
                    except OAuthError as refused:
                        raise SmtpError("auth", refused.diagnosis, refused.server_reply, transient=False) from exc
                    if fresh != s.oauth_token:
                        s.oauth_token = fresh
                        continue
                raise SmtpError("auth", s.oauth_refusal or f"{self.where} refused the OAuth token for "
                                f"{s.username!r}.", exc.server_reply, code=exc.code, transient=False) from exc

    def close(self) -> None:
        """Say QUIT and close the connection; a server that already left is fine."""
        smtp, self._smtp = self._smtp, None
        if smtp is None:
            return
        try:
            smtp.quit()
        except (smtplib.SMTPException, OSError) as exc:
            # The messages are sent; a failing goodbye changes nothing for them.
            log.debug("QUIT to %s failed: %s", self.where, exc)
        smtp.close()

    def _reopen(self) -> smtplib.SMTP:
        self.close()
        self.open()
        assert self._smtp is not None
        return self._smtp

    def send(
        self,
        msg: EmailMessage,
        from_addr: str | None = None,
        to_addrs: list[str] | None = None,
    ) -> str:
        """Send one message and return the server's reply to DATA, e.g. "250 Message accepted"."""
        sender = from_addr if from_addr is not None else _envelope_sender(msg)
        recipients = list(to_addrs) if to_addrs is not None else _envelope_recipients(msg)
        _check_envelope(sender, recipients)
        return self.send_bytes(_wire_bytes(msg, needs_smtputf8(sender, recipients)), sender, recipients)

    def send_bytes(self, data: bytes, from_addr: str, to_addrs: Sequence[str]) -> str:
        """Send a message already flattened for the wire and return the server's reply to DATA.

        `data` goes out as given: CRLF line ends, no Bcc header, and, when an address is
        not ASCII, flattened with `utf8=True` (see `needs_smtputf8`). Callers that keep a
        copy of the mail as sent flatten it once and send those very bytes.
        """
        sender = from_addr
        recipients = list(to_addrs)
        _check_envelope(sender, recipients)
        international = needs_smtputf8(sender, recipients)

        code, reply = self._mail(sender, data, international)
        smtp = self._smtp
        assert smtp is not None
        if code != 250:
            self._rset(smtp)
            raise SmtpError("sender", self._sender_diagnosis(sender, code, reply),
                            _reply(code, reply), code=code)

        refused: dict[str, str] = {}
        first_code: int | None = None
        for rcpt in recipients:
            with self._errors("sending RCPT TO"):
                code, reply = smtp.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = _reply(code, reply)
                first_code = first_code or code
        if refused:
            # Nothing is half-sent: the caller decides about the message as a whole.
            self._rset(smtp)
            names = ", ".join(refused)
            raise SmtpError(
                "recipient",
                f"The server refused the recipient {names}; nothing was sent.",
                next(iter(refused.values())),
                code=first_code,
                refused=refused,
            )

        try:
            with self._errors("sending the message (DATA)"):
                code, reply = smtp.data(data)
        except SmtpError as exc:
            if exc.code is not None:
                # DATA itself was refused (no 354): the transaction is still open.
                self._rset(smtp)
                raise SmtpError("data", f"The server refused to take the message: {exc.server_reply}",
                                exc.server_reply, code=exc.code) from exc
            raise
        if code != 250:
            again = " (a temporary refusal: try again later)" if 400 <= code < 500 else ""
            raise SmtpError(
                "data",
                f"The server did not accept the message after receiving it{again}.",
                _reply(code, reply),
                code=code,
            )
        return _reply(code, reply)

    def _mail(self, sender: str, data: bytes, international: bool) -> tuple[int, bytes]:
        """Say MAIL FROM, reconnecting once when the server dropped us between messages."""
        smtp = self._smtp if self._smtp is not None else self._reopen()
        try:
            options = self._mail_options(smtp, data, international)
            with self._errors("sending MAIL FROM"):
                code, reply = smtp.mail(sender, options)
        except SmtpError as exc:
            if not (exc.kind == "protocol"
                    and isinstance(exc.__cause__, smtplib.SMTPServerDisconnected)):
                raise
            code, reply = 421, b""
        if code != 421:
            return code, reply
        # 421 or a closed socket: the server ended the session (idle timeout, restart).
        smtp = self._reopen()
        options = self._mail_options(smtp, data, international)
        with self._errors("sending MAIL FROM after reconnecting"):
            return smtp.mail(sender, options)

    def _mail_options(self, smtp: smtplib.SMTP, data: bytes, international: bool) -> list[str]:
        options: list[str] = []
        if international:
            if not smtp.has_extn("smtputf8"):
                raise SmtpError(
                    "recipient",
                    f"{self.where} does not accept addresses with non-ASCII characters (no SMTPUTF8).",
                    transient=False,
                )
            options += ["SMTPUTF8", "BODY=8BITMIME"]
        elif not data.isascii() and smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
        return options

    def _sender_diagnosis(self, sender: str, code: int, reply: bytes) -> str:
        text = reply.decode("utf-8", "replace").lower()
        account = self.settings.username or "this account"
        if code >= 500 and ("sendas" in text or "send as" in text or "permission" in text
                            or text.startswith("5.7.")):
            return (f"The server refused the sender {sender}: {account} may not send as that "
                    "From Address. Use the account's own address, or give it permission to "
                    "send as this address.")
        return f"The server refused the sender address {sender}."

    def _rset(self, smtp: smtplib.SMTP) -> None:
        # Clears the refused transaction so the next message starts clean on this connection.
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError) as exc:
            # A dead connection is noticed, and reopened, by the next send().
            log.info("RSET to %s failed: %s", self.where, exc)

    @contextmanager
    def _errors(self, step: str) -> Iterator[None]:
        """Turn smtplib/socket/TLS failures during `step` into SmtpError in plain words."""
        where = self.where
        s = self.settings
        try:
            yield
        except SmtpError:
            raise
        except smtplib.SMTPAuthenticationError as exc:
            raise SmtpError(
                "auth",
                f"{where} rejected the username or password for {s.username!r}.",
                self._scrub(_reply(exc.smtp_code, exc.smtp_error)),
                code=exc.smtp_code,
            ) from exc
        except smtplib.SMTPConnectError as exc:
            raise SmtpError(
                "refused",
                f"{where} answered but refused to serve us.",
                self._scrub(_reply(exc.smtp_code, exc.smtp_error)),
                code=exc.smtp_code,
            ) from exc
        except smtplib.SMTPServerDisconnected as exc:
            if "timed out" in str(exc):
                raise SmtpError(
                    "timeout",
                    f"{where} did not answer within {s.timeout:g} seconds while {step}.",
                    str(exc),
                ) from exc
            raise SmtpError(
                "protocol",
                f"{where} closed the connection while {step}.",
                str(exc),
                transient=True,
            ) from exc
        except smtplib.SMTPResponseException as exc:
            raise SmtpError(
                "protocol",
                f"{where} refused while {step}.",
                self._scrub(_reply(exc.smtp_code, exc.smtp_error)),
                code=exc.smtp_code,
            ) from exc
        except smtplib.SMTPException as exc:
            raise SmtpError("protocol", f"The SMTP exchange with {where} failed while {step}.",
                            self._scrub(str(exc)), transient=False) from exc
        except ssl.SSLCertVerificationError as exc:
            raise SmtpError(
                "tls_cert",
                f"{where} presented a TLS certificate we cannot trust ({exc.verify_message}). "
                "Use the server's real host name or give the CA file of your in-house "
                "certificate. Turn verification off only for a self-signed server you control.",
                str(exc),
                transient=False,
            ) from exc
        except ssl.SSLError as exc:
            raise SmtpError(
                "tls",
                f"The TLS handshake with {where} failed while {step}. Check the security "
                "setting: port 465 usually needs SSL/TLS, port 587 usually needs STARTTLS.",
                str(exc),
                transient=False,
            ) from exc
        except socket.gaierror as exc:
            raise SmtpError(
                "dns",
                f"The host name {s.host!r} could not be found (DNS). Check the SMTP host spelling.",
                str(exc),
                # Only a failing resolver is worth retrying; an unknown name stays unknown.
                transient=exc.errno == socket.EAI_AGAIN,
            ) from exc
        except ConnectionRefusedError as exc:
            raise SmtpError(
                "refused",
                f"{where} refused the connection: nothing listens on that port, or a firewall "
                "rejects it. Check the SMTP host and port.",
                str(exc),
            ) from exc
        except TimeoutError as exc:
            raise SmtpError(
                "timeout",
                f"{where} did not answer within {s.timeout:g} seconds while {step}. A firewall "
                "may drop the traffic, or the host or port is wrong.",
                str(exc),
            ) from exc
        except OSError as exc:
            raise SmtpError(
                "refused",
                f"Cannot talk to {where} ({exc.strerror or exc}) while {step}. Check the SMTP "
                "host and port and that this server may reach it.",
                str(exc),
            ) from exc

    def _scrub(self, text: str) -> str:
        return _scrub(text, self.settings)


def _scrub(text: str, settings: SmtpSettings) -> str:
    """Remove the password and the OAuth token from text that may be shown to an admin."""
    for secret in (settings.password, settings.oauth_token):
        if secret:
            text = text.replace(secret, "********")
    return text


def needs_smtputf8(from_addr: str, to_addrs: Sequence[str]) -> bool:
    """Tell whether an envelope needs SMTPUTF8 (and the message utf8=True headers): a non-ASCII address."""
    return not (from_addr.isascii() and all(a.isascii() for a in to_addrs))


def _check_envelope(sender: str, recipients: list[str]) -> None:
    if not sender:
        raise SmtpError("sender", "The message has no From address to send it as.", transient=False)
    if not recipients:
        raise SmtpError("recipient", "The message has no recipients.", transient=False)


def _envelope_sender(msg: EmailMessage) -> str:
    header = msg["Sender"] or msg["From"]
    addresses = getaddresses([str(header)]) if header else []
    return addresses[0][1] if addresses else ""


def _envelope_recipients(msg: EmailMessage) -> list[str]:
    values = [str(v) for name in ("To", "Cc", "Bcc") for v in msg.get_all(name, [])]
    return [addr for _, addr in getaddresses(values) if addr]


def _wire_bytes(msg: EmailMessage, international: bool) -> bytes:
    """Return the message as sent: CRLF line ends, Bcc removed."""
    outgoing = copy.copy(msg)
    del outgoing["Bcc"]
    del outgoing["Resent-Bcc"]
    policy = outgoing.policy.clone(linesep="\r\n")
    if international:
        policy = policy.clone(utf8=True)
    return outgoing.as_bytes(policy=policy)


def diagnose(
    settings: SmtpSettings,
    from_addr: str,
    to_addr: str,
    *,
    subject: str = "Test SMTP from the helpdesk",
    body: str = (
        "This message was sent by the helpdesk's Test SMTP button to check the outgoing mail "
        "settings. No reply is needed."
    ),
) -> Diagnosis:
    """Send a real test message and say in plain words whether and why it failed."""
    domain = from_addr.rpartition("@")[2] or None
    try:
        msg = compose(OutgoingMail(
            to=[to_addr], subject=subject, text=body, from_address=from_addr,
            message_id=make_msgid(domain=domain), auto_submitted=True,
        ))
    except ValueError as exc:
        return Diagnosis(ok=False, summary=f"Cannot build the test message: {exc}",
                         kind="sender" if str(exc).startswith("From") else "recipient")
    try:
        with SmtpSession(settings) as session:
            reply = session.send(msg, from_addr, [to_addr])
    except SmtpError as exc:
        return Diagnosis(
            ok=False,
            summary=_scrub(exc.diagnosis, settings),
            detail=_scrub(exc.server_reply, settings),
            kind=exc.kind,
            hint=provider_hint(settings.host) if exc.kind in ("auth", "no_auth") else "",
        )
    return Diagnosis(ok=True, summary=f"Test message sent to {to_addr}",
                     detail=_scrub(reply, settings), kind="ok")
