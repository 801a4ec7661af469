"""An IMAP session on the support mailbox: connect, log in, read new mail, mark it done."""
from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType

from imapclient import SEEN, IMAPClient
from imapclient import exceptions as imap_exc

from helpdesk.mail.diagnosis import Diagnosis
from helpdesk.mail.oauth import OAuthError
from helpdesk.mail.tls import client_context

SECURITY_MODES = ("ssl", "starttls", "none")
DONE_MODES = ("seen", "move", "delete")

PROVIDER_PRESETS: dict[str, dict[str, object]] = {
    "gmail": {
        "label": "Gmail / Google Workspace",
        "host": "imap.gmail.com",
        "port": 993,
        "security": "ssl",
        "oauth_provider": "google",
        "note": "sign in with OAuth 2.0 (an App Password works too, where your security policy allows one); "
        "IMAP must be enabled in Gmail settings",
    },
    "microsoft365": {
        "label": "Microsoft 365",
        "host": "outlook.office365.com",
        "port": 993,
        "security": "ssl",
        "oauth_provider": "microsoft",
        "note": "Exchange Online has refused password (Basic) sign-in for IMAP since October 2022: "
        "sign in with OAuth 2.0",
    },
}


@dataclass
class ImapSettings:
    """Where and how to reach the support mailbox; secrets stay out of repr."""

    host: str
    port: int = 993
    security: str = "ssl"  # "ssl" | "starttls" | "none"
    username: str = ""
    password: str = field(default="", repr=False)
    oauth_token: str = field(default="", repr=False)
    # Given the token the server refused, return a fresh one (or raise OAuthError): one more try.
    oauth_renew: Callable[[str], str] | None = field(default=None, repr=False)
    oauth_refusal: str = ""  # what to tell an admin when the server refuses a fresh token too
    verify_tls: bool = True
    ca_file: str | None = None
    timeout: float = 15.0

    def __post_init__(self) -> None:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"security must be one of {SECURITY_MODES}, not {self.security!r}")


@dataclass(frozen=True)
class FolderState:
    """What SELECT told us about a folder."""

    uidvalidity: int
    uidnext: int
    exists: int


class ImapError(Exception):
    """An IMAP step failed; `diagnosis` says so in words an admin can act on."""

    def __init__(self, kind: str, diagnosis: str, server_reply: str = "") -> None:
        super().__init__(f"{diagnosis} ({server_reply})" if server_reply else diagnosis)
        self.kind = kind
        self.diagnosis = diagnosis
        self.server_reply = server_reply


def _reply_text(exc: BaseException) -> str:
    """Return the server's words from an imaplib/imapclient error, without bytes-repr noise."""
    text = str(exc)
    if text.startswith(("b'", 'b"')) and text.endswith(("'", '"')):
        text = text[2:-1]
    return text


def _where(settings: ImapSettings) -> str:
    return f"{settings.host}:{settings.port}"


@contextmanager
def _network_errors(settings: ImapSettings, step: str) -> Iterator[None]:
    """Turn socket/TLS failures during `step` into ImapError with a plain-words diagnosis."""
    where = _where(settings)
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise ImapError(
            "tls_cert",
            f"The server at {where} presented a TLS certificate we cannot trust "
            f"({exc.verify_message}). Use the server's real host name, install a trusted "
            "certificate on it, or give the CA file of your in-house certificate.",
            str(exc),
        ) from exc
    except ssl.SSLError as exc:
        raise ImapError(
            "tls",
            f"The TLS handshake with {where} failed while {step}. Check the security setting: "
            "port 993 usually needs SSL/TLS, port 143 usually needs STARTTLS.",
            str(exc),
        ) from exc
    except socket.gaierror as exc:
        raise ImapError(
            "dns",
            f"The host name {settings.host!r} could not be found (DNS). Check the IMAP host spelling.",
            str(exc),
        ) from exc
    except ConnectionRefusedError as exc:
        raise ImapError(
            "refused",
            f"{where} refused the connection: nothing listens on that port, or a firewall "
            "rejects it. Check the IMAP host and port.",
            str(exc),
        ) from exc
    except TimeoutError as exc:
        raise ImapError(
            "timeout",
            f"{where} did not answer within {settings.timeout:g} seconds while {step}. A firewall "
            "may drop the traffic, or the port speaks another protocol (e.g. SSL/TLS expected "
            "but STARTTLS configured).",
            str(exc),
        ) from exc
    except imap_exc.IMAPClientAbortError as exc:
        raise ImapError(
            "protocol",
            f"The connection to {where} was dropped while {step}.",
            _reply_text(exc),
        ) from exc
    except OSError as exc:
        raise ImapError(
            "refused",
            f"Cannot connect to {where} ({exc.strerror or exc}). Check the IMAP host and port "
            "and that this server may reach it.",
            str(exc),
        ) from exc


class ImapSession:
    """A logged-in IMAP connection, used as a context manager."""

    def __init__(self, settings: ImapSettings) -> None:
        self.settings = settings
        self.client: IMAPClient | None = None
        self.greeting = ""
        # What the server offers after login; read once, consulted for MOVE / UIDPLUS.
        self.capabilities: frozenset[str] = frozenset()
        self._folder: str | None = None

    def __enter__(self) -> ImapSession:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect, secure the channel as configured and log in."""
        s = self.settings
        use_ssl = s.security == "ssl"
        with _network_errors(s, "connecting"):
            client = IMAPClient(
                s.host,
                s.port,
                ssl=use_ssl,
                ssl_context=client_context(s.ca_file, s.verify_tls) if use_ssl else None,
                timeout=s.timeout,
            )
        _quiet_protocol_log(client)
        try:
            self.greeting = client.welcome.decode("utf-8", "replace") if client.welcome else ""
            if s.security == "starttls":
                self._starttls(client)
            self._login(client)
            with _network_errors(s, "reading the server capabilities"):
                try:
                    offered = client.capabilities()
                except imap_exc.IMAPClientAbortError:
                    raise
                except imap_exc.IMAPClientError as exc:
                    raise ImapError(
                        "protocol", "The server would not list its capabilities.", _reply_text(exc)
                    ) from exc
            self.capabilities = frozenset(c.decode("ascii", "replace").upper() for c in offered)
        except BaseException:
            try:
                client.shutdown()
            except OSError:
                pass  # a failed TLS upgrade has already closed the socket
            raise
        self.client = client

    def _starttls(self, client: IMAPClient) -> None:
        s = self.settings
        with _network_errors(s, "switching to TLS (STARTTLS)"):
            try:
                client.starttls(client_context(s.ca_file, s.verify_tls))
            except imap_exc.CapabilityError as exc:
                raise ImapError(
                    "tls",
                    f"{_where(s)} does not offer STARTTLS. Use SSL/TLS (usually port 993) instead.",
                    _reply_text(exc),
                ) from exc
            except imap_exc.IMAPClientAbortError:
                raise
            except imap_exc.IMAPClientError as exc:
                raise ImapError(
                    "tls", f"{_where(s)} refused to switch to TLS (STARTTLS).", _reply_text(exc)
                ) from exc

    def _login(self, client: IMAPClient) -> None:
        s = self.settings
        with _network_errors(s, "logging in"):
            try:
                if s.oauth_token:
                    self._oauth2_login(client)
                elif not s.password.isascii():
                    self._login_utf8(client)
                else:
                    client.login(s.username, s.password)
            except imap_exc.IMAPClientAbortError:
                raise
            except imap_exc.IMAPClientError as exc:
                reply = _scrub(_reply_text(exc), s)
                if s.oauth_token:
                    raise ImapError("auth", s.oauth_refusal or f"The server refused the OAuth token for "
                                    f"{s.username!r}.", reply) from exc
                raise ImapError(
                    "auth",
                    f"The server refused the login for {s.username!r}: wrong user name or "
                    "password, or this account may not use IMAP.",
                    reply,
                ) from exc

    def _oauth2_login(self, client: IMAPClient) -> None:
        """Sign in with XOAUTH2; a refused token is renewed once and tried again."""
        s = self.settings
        try:
            client.oauth2_login(s.username, s.oauth_token)
        except imap_exc.IMAPClientAbortError:
            raise
        except imap_exc.IMAPClientError:
            if s.oauth_renew is None:
                raise
            fresh = _renewed(s)
            if fresh == s.oauth_token:
                raise
            s.oauth_token = fresh
            client.oauth2_login(s.username, fresh)

    def _login_utf8(self, client: IMAPClient) -> None:
        """Log in with a password LOGIN cannot carry (it is ASCII only): AUTHENTICATE PLAIN sends UTF-8."""
        if not client.has_capability("AUTH=PLAIN"):
            # Raised without the encoding error, whose text and object hold the password.
            raise ImapError(
                "auth",
                f"The password has characters other than plain ASCII letters, digits and punctuation, and "
                f"{_where(self.settings)} offers no login that can carry them (AUTH=PLAIN). Use a password "
                "without accents or other special letters.",
                "",
            )
        client.plain_login(self.settings.username, self.settings.password)

    def close(self) -> None:
        """Log out and drop the connection; never raises."""
        client, self.client = self.client, None
        if client is None:
            return
        try:
            client.logout()
        except (imap_exc.IMAPClientError, OSError):
            # The server may already have hung up; the socket still has to go.
            try:
                client.shutdown()
            except OSError:
                pass

    @property
    def _client(self) -> IMAPClient:
        if self.client is None:
            raise ImapError("protocol", "The IMAP session is not open.")
        return self.client

    @contextmanager
    def _command(self, step: str) -> Iterator[None]:
        """Map failures of an ordinary command (after login) to ImapError."""
        with _network_errors(self.settings, step):
            try:
                yield
            except imap_exc.IMAPClientAbortError:
                raise
            except imap_exc.IMAPClientError as exc:
                raise ImapError(
                    "protocol",
                    f"The server rejected the command while {step}.",
                    _reply_text(exc),
                ) from exc

    def list_folders(self) -> list[str]:
        """Return every folder name the account can see."""
        with self._command("listing folders"):
            return [name for _flags, _sep, name in self._client.list_folders()]

    def folder_exists(self, folder: str) -> bool:
        """Tell whether `folder` exists."""
        with self._command(f"looking for folder {folder!r}"):
            return bool(self._client.folder_exists(folder))

    def create_folder(self, folder: str) -> None:
        """Create `folder` unless it already exists."""
        if self.folder_exists(folder):
            return
        with self._command(f"creating folder {folder!r}"):
            self._client.create_folder(folder)

    def delete_folder(self, folder: str) -> None:
        """Delete `folder` with its messages."""
        with self._command(f"deleting folder {folder!r}"):
            if self._folder == folder:
                self._client.close_folder()
                self._folder = None
            self._client.delete_folder(folder)

    def select(self, folder: str, *, readonly: bool = False) -> FolderState:
        """Select `folder` for the commands that follow and return its UID state."""
        client = self._client
        with _network_errors(self.settings, f"opening folder {folder!r}"):
            try:
                resp = client.select_folder(folder, readonly=readonly)
            except imap_exc.IMAPClientAbortError:
                raise
            except imap_exc.IMAPClientError as exc:
                self._folder = None
                raise ImapError(
                    "folder",
                    f"The folder {folder!r} cannot be opened: it does not exist or this account "
                    "may not read it. Check the folder name (sub-folders use the server's "
                    "separator, e.g. INBOX.Support).",
                    _reply_text(exc),
                ) from exc
            self._folder = folder
            uidnext = resp.get(b"UIDNEXT")
            if uidnext is None:
                # UIDNEXT is optional in SELECT replies; STATUS always has it.
                uidnext = client.folder_status(folder, [b"UIDNEXT"])[b"UIDNEXT"]
        return FolderState(
            uidvalidity=int(resp.get(b"UIDVALIDITY", 0)),
            uidnext=int(uidnext),
            exists=int(resp.get(b"EXISTS", 0)),
        )

    def search_uids_since(self, last_uid: int) -> list[int]:
        """Return the UIDs above `last_uid` in the selected folder, ascending."""
        with self._command("searching for new messages"):
            found = self._client.search(["UID", f"{last_uid + 1}:*"])
        # "n:*" always matches the highest UID, even when it is below n.
        return sorted(uid for uid in found if uid > last_uid)

    def fetch_uids(self, uids: Iterable[int], batch: int = 50,
                   missing: bool = False) -> Iterator[tuple[int, bytes | None]]:
        """Yield (uid, raw message) for `uids` in ascending order, without setting \\Seen.

        A message expunged by another client meanwhile is left out, or with `missing` yielded as (uid, None).
        """
        ordered = sorted(set(uids))
        for start in range(0, len(ordered), batch):
            chunk = ordered[start : start + batch]
            with self._command("downloading messages"):
                got = self._client.fetch(chunk, ["BODY.PEEK[]"])
            for uid in chunk:
                data = got.get(uid, {}).get(b"BODY[]")
                if data is not None:
                    yield uid, bytes(data)
                elif missing:
                    yield uid, None

    def fetch_since(self, last_uid: int, batch: int = 50) -> Iterator[tuple[int, bytes]]:
        """Yield (uid, raw message) for every message above `last_uid`, oldest first."""
        yield from self.fetch_uids(self.search_uids_since(last_uid), batch=batch)

    def mark_seen(self, uids: Iterable[int]) -> None:
        """Set \\Seen on `uids`."""
        uids = list(uids)
        if uids:
            with self._command("marking messages as read"):
                self._client.add_flags(uids, [SEEN], silent=True)

    def move(self, uids: Iterable[int], folder: str) -> None:
        """Move `uids` to `folder`, creating the folder first when missing."""
        uids = list(uids)
        if not uids:
            return
        self.create_folder(folder)
        client = self._client
        with self._command(f"moving messages to {folder!r}"):
            if "MOVE" in self.capabilities:
                client.move(uids, folder)
                return
            client.copy(uids, folder)
        self.delete(uids)

    def delete(self, uids: Iterable[int]) -> None:
        """Flag `uids` \\Deleted and expunge them."""
        uids = list(uids)
        if not uids:
            return
        client = self._client
        with self._command("deleting messages"):
            client.delete_messages(uids, silent=True)
            if "UIDPLUS" in self.capabilities:
                client.uid_expunge(uids)
            else:
                # Without UIDPLUS a plain EXPUNGE also removes other \Deleted mail in the folder;
                # that mail was already marked for removal by someone, so this is acceptable.
                client.expunge()

    def mark_done(self, uids: Iterable[int], mode: str, folder: str | None = None) -> None:
        """Mark imported messages as processed: "seen", "move" (to `folder`) or "delete"."""
        if mode == "seen":
            self.mark_seen(uids)
        elif mode == "move":
            if not folder:
                raise ValueError("mark_done(mode='move') needs a target folder")
            self.move(uids, folder)
        elif mode == "delete":
            self.delete(uids)
        else:
            raise ValueError(f"mode must be one of {DONE_MODES}, not {mode!r}")

    @property
    def can_idle(self) -> bool:
        """Tell whether the server pushes new-mail notices (RFC 2177 IDLE)."""
        return "IDLE" in self.capabilities

    def wait_for_new_mail(self, timeout: float) -> bool:
        """Wait in IDLE on the selected folder up to `timeout` seconds; True when mail arrived."""
        client = self._client
        with self._command("waiting for new mail"):
            # Mail that came while we were busy is announced on the next command: ask first.
            _message, pending = client.noop()
            if _announces_mail(pending):
                return True
            # imaplib keeps the folder's size from SELECT as an "EXISTS" answer; only one that
            # comes after this point announces new mail.
            client._imap.untagged_responses.pop("EXISTS", None)
            client.idle()
            responses: list = []
            try:
                # An announcement sent before the server's "+ idling" is filed by imaplib, not returned.
                if client._imap.untagged_responses.pop("EXISTS", None):
                    return True
                # imaplib may have read the announcement together with "+ idling": it then waits in
                # its buffer, and the socket that idle_check watches stays quiet until the timeout.
                if not _has_buffered_input(client):
                    responses = client.idle_check(timeout=timeout)
            finally:
                # What arrives while IDLE ends (say, new mail just after another client's flag
                # change woke us) comes with DONE's reply; dropping it would leave that mail
                # waiting for the next IDLE round, minutes away.
                _text, ending = client.idle_done()
        return _announces_mail([*responses, *ending])

    def append(self, folder: str, raw: bytes, flags: Iterable[str] = ()) -> int | None:
        """Store `raw` in `folder`; return its UID when the server reports it (UIDPLUS)."""
        with self._command(f"adding a message to {folder!r}"):
            reply = self._client.append(folder, raw, flags=tuple(flags))
        # Reply looks like b"[APPENDUID <uidvalidity> <uid>] Append completed."
        text = reply.decode("ascii", "replace") if isinstance(reply, bytes) else str(reply)
        if text.startswith("[APPENDUID "):
            parts = text[1:].split("]", 1)[0].split()
            if len(parts) == 3 and parts[2].isdigit():
                return int(parts[2])
        return None


def _quiet_protocol_log(client: IMAPClient) -> None:
    """Stop imaplib writing out each response unless its protocol log is wanted."""
    # IMAPClient turns imaplib's debug output on and sends it to the "imapclient.imaplib" logger.
    # imaplib formats every message before the logger can drop it, the repr of each mail fetched
    # among them: over half of the CPU a FETCH of 50 mails costs. imaplib only reads `debug`.
    if not logging.getLogger("imapclient.imaplib").isEnabledFor(logging.DEBUG):
        client._imap.debug = 0


def _has_buffered_input(client: IMAPClient) -> bool:
    """Tell whether bytes from the server were already read into imaplib's buffer (or TLS's), unseen."""
    sock = client.socket()
    previous = sock.gettimeout()
    sock.setblocking(False)
    try:
        return bool(client._imap.file.peek(1))
    except OSError:  # nothing buffered, and nothing on the wire yet
        return False
    finally:
        sock.settimeout(previous)


def _renewed(settings: ImapSettings) -> str:
    try:
        return settings.oauth_renew(settings.oauth_token)
    except OAuthError as exc:
        raise token_failure(exc) from exc


def token_failure(exc: OAuthError) -> ImapError:
    """Return the ImapError of a token the provider would not give: kind "oauth", or an outage."""
    # A provider that cannot be reached is an outage, not a broken sign-in.
    return ImapError("oauth" if exc.needs_reconnect else "oauth_unreachable", exc.diagnosis, exc.server_reply)


def _announces_mail(responses) -> bool:
    return any(isinstance(r, tuple) and len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses)


def _scrub(text: str, settings: ImapSettings) -> str:
    """Remove the secrets from text that may be shown to an admin."""
    for secret in (settings.password, settings.oauth_token):
        if secret:
            # A server that echoes the command shows the password as LOGIN sent it: quoted, with
            # quotes and backslashes escaped. Longest forms first: they contain the shorter ones.
            escaped = secret.replace("\\", "\\\\").replace('"', '\\"')
            # Error texts may also hold the reply as a bytes repr, which escapes them once more.
            as_repr = [repr(form.encode("utf-8"))[2:-1] for form in (escaped, secret)]
            for form in sorted(set((escaped, secret, *as_repr)), key=len, reverse=True):
                text = text.replace(form, "********")
    return text


def _hint_for(settings: ImapSettings) -> str:
    host = settings.host.lower().rstrip(".")
    for preset in PROVIDER_PRESETS.values():
        if preset["host"] == host:
            return f"{preset['label']}: {preset['note']}"
    return ""


def diagnose(settings: ImapSettings, folder: str = "INBOX") -> Diagnosis:
    """Try the mailbox settings end to end and say in plain words what works or fails."""
    try:
        with ImapSession(settings) as session:
            state = session.select(folder, readonly=True)
            greeting = session.greeting
    except ImapError as exc:
        return Diagnosis(
            ok=False,
            summary=_scrub(exc.diagnosis, settings),
            detail=_scrub(exc.server_reply, settings),
            kind=exc.kind,
            hint=_hint_for(settings),
        )
    noun = "message" if state.exists == 1 else "messages"
    return Diagnosis(
        ok=True,
        summary=f"Connected and logged in; {folder} has {state.exists} {noun}",
        detail=_scrub(greeting, settings),
        kind="ok",
    )
