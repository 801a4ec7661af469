"""The form of the Inbound (IMAP) tab: one mailbox's connection, polling and after-processing settings."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, IntegerField, PasswordField, RadioField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from helpdesk.admin_email.forms_oauth import OAuthFields
from helpdesk.services.mailboxes import MailboxValues
from helpdesk.validators import HostName, MailAddress

SECURITY_CHOICES = [SelectChoice("ssl", "SSL/TLS (port 993)"), SelectChoice("starttls", "STARTTLS (port 143)"),
                    SelectChoice("none", "None — unencrypted, only for a server on this machine")]
AFTER_CHOICES = [SelectChoice("seen", "Mark as read (seen)"), SelectChoice("move", "Move to a folder"),
                 SelectChoice("delete", "Delete from the server")]
MIN_INTERVAL = 30


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


class InboundForm(OAuthFields, FlaskForm):
    name = StringField("Name", filters=[_strip], default="Support",
                       validators=[DataRequired(message="Give the mailbox a name, e.g. Support."), Length(max=200)])
    host = StringField("Host", filters=[_strip], validators=[HostName(), Length(max=253)])
    port = IntegerField("Port", default=993, validators=[
        InputRequired(message="Enter the port: 993 for SSL/TLS, 143 for STARTTLS."),
        NumberRange(min=1, max=65535, message="The port is a number from 1 to 65535.")])
    security = SelectField("Security", choices=SECURITY_CHOICES, default="ssl")
    username = StringField("Username", filters=[_strip], validators=[Length(max=254)])
    password = PasswordField("Password", validators=[Length(max=500)])
    folder = StringField("Mailbox", filters=[_strip], default="INBOX",
                         validators=[DataRequired(message="Name the folder to read, usually INBOX."), Length(max=500)])
    poll_interval = IntegerField("Poll interval (seconds)", default=120, validators=[
        InputRequired(message="Enter how often to poll, in seconds."),
        NumberRange(min=MIN_INTERVAL,
                    message=f"Poll at most every {MIN_INTERVAL} seconds: enter {MIN_INTERVAL} or more.")])
    enabled = BooleanField("Enabled: poll this mailbox")
    after_processing = RadioField("After processing", choices=AFTER_CHOICES, default="seen")
    move_to_folder = StringField("Move to folder", filters=[_strip], validators=[Length(max=500)])
    reply_from_address = StringField("Reply From address", filters=[_strip],
                                     validators=[Optional(), MailAddress(), Length(max=254)])
    verify_tls = BooleanField("Verify TLS certificate", default=True)

    def __init__(self, *args, has_password: bool = False, secret_for_client: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.has_password = has_password
        self.secret_for_client = secret_for_client

    def validate_host(self, field):
        if self.enabled.data and not field.data:
            raise ValidationError("Enter the IMAP server's host name to enable polling.")

    def validate_username(self, field):
        # With delegated OAuth the login is the connected account; app-only needs the mailbox named.
        needed = not self.uses_oauth or self.oauth_flow.data == "client_credentials"
        if (self.enabled.data or self.connect.data) and needed and not field.data:
            raise ValidationError("Enter the user name (the mailbox address) to enable polling." if not self.uses_oauth
                                  else "Enter the mailbox address the app signs in to.")

    def validate_password(self, field):
        if self.enabled.data and not self.uses_oauth and not field.data and not self.has_password:
            raise ValidationError("Enter the password to enable polling.")

    def validate_move_to_folder(self, field):
        if self.after_processing.data != "move":
            return
        if not field.data:
            raise ValidationError("Name the folder processed mail is moved to, e.g. INBOX.Processed.")
        if field.data == self.folder.data:
            raise ValidationError("Choose a folder other than the one that is read.")

    def values(self) -> MailboxValues:
        """Return the settings typed into the form."""
        return MailboxValues(**{name: self[name].data for name in MailboxValues.__dataclass_fields__})

    def connection_errors(self) -> list[str]:
        """Validate only what a connection test needs; return the messages."""
        errors = []
        for name in ("host", "port", "security"):
            if not self[name].validate(self):
                errors += [f"{self[name].label.text}: {e}" for e in self[name].errors]
        if not self.host.data and not errors:
            errors.append("Host: enter the IMAP server's host name.")
        return errors
