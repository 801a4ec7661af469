"""The form of the Outbound (SMTP) tab: the server, the sender, and where Test SMTP sends to."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional, ValidationError

from helpdesk.admin_email.forms_oauth import OAuthFields
from helpdesk.validators import HostName, MailAddress

SECURITY_CHOICES = [SelectChoice("starttls", "STARTTLS"), SelectChoice("ssl", "SSL/TLS"),
                    SelectChoice("none", "None")]


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


class OutboundForm(OAuthFields, FlaskForm):
    host = StringField("Host", filters=[_strip], validators=[
        DataRequired(message="Enter the SMTP server's host name, e.g. smtp.example.com."),
        Length(max=253), HostName()])
    port = IntegerField("Port", default=587, validators=[
        InputRequired(message="Enter a port number, e.g. 587."),
        NumberRange(min=1, max=65535, message="The port must be a number from 1 to 65535.")])
    security = SelectField("Security", choices=SECURITY_CHOICES, default="starttls")
    username = StringField("Username", filters=[_strip], validators=[Optional(), Length(max=254)])
    # PasswordField never renders its value back (hide_value), which is what keeps it write-only.
    password = PasswordField("Password", validators=[Optional(), Length(max=1000)])
    clear_password = BooleanField("Clear stored password")
    from_address = EmailField("From Address", filters=[_strip], validators=[
        DataRequired(message="Enter the address mail is sent from."), Length(max=254), MailAddress()])
    from_name = StringField("From name", filters=[_strip], validators=[Optional(), Length(max=200)])
    verify_tls = BooleanField("Verify TLS certificate", default=True)
    timeout = IntegerField("Timeout (seconds)", default=15, validators=[
        InputRequired(message="Enter how many seconds to wait for the server."),
        NumberRange(min=1, max=60, message="The timeout must be from 1 to 60 seconds.")])
    test_to = EmailField("Send test to", filters=[_strip], validators=[Optional(), Length(max=254), MailAddress()])

    def __init__(self, *args, secret_for_client: str = "", **kwargs):
        super().__init__(*args, **kwargs)
        self.secret_for_client = secret_for_client

    def validate_username(self, field):
        if self.uses_oauth and self.oauth_flow.data == "client_credentials" and not field.data:
            raise ValidationError("Enter the mailbox address the app sends as.")

    def validate_clear_password(self, field):
        if field.data and self.password.data:
            raise ValidationError("Either type a new password or clear the stored one, not both.")
