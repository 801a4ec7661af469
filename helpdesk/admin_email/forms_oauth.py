"""The Authentication fields that Outbound (SMTP) and every mailbox share: password or OAuth 2.0."""
from urllib.parse import urlsplit

from wtforms import PasswordField, RadioField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import Length, ValidationError

from helpdesk.services.sign_in import OAuthValues

AUTH_CHOICES = [SelectChoice("password", "Password"), SelectChoice("oauth2", "OAuth 2.0")]
PROVIDER_CHOICES = [SelectChoice("microsoft", "Microsoft 365"), SelectChoice("google", "Google"),
                    SelectChoice("custom", "Custom")]
FLOW_CHOICES = [SelectChoice("authorization_code", "Sign in as the mailbox user (delegated)"),
                SelectChoice("client_credentials", "App-only: client credentials (Microsoft 365, Custom)")]


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


class HttpsUrl:
    """Require an https:// URL (tokens and secrets never travel in the clear)."""

    def __call__(self, form, field):
        if not field.data:
            return
        parts = urlsplit(field.data)
        if parts.scheme != "https" or not parts.netloc:
            raise ValidationError("Enter the full https:// address, e.g. https://login.example.com/oauth2/token.")


class OAuthFields:
    """Mixed into a settings form: the sign-in method and the OAuth app registration."""

    auth_method = RadioField("Authentication", choices=AUTH_CHOICES, default="password")
    oauth_provider = SelectField("Provider", choices=PROVIDER_CHOICES, default="microsoft")
    oauth_flow = SelectField("Sign-in flow", choices=FLOW_CHOICES, default="authorization_code")
    oauth_client_id = StringField("Client ID", filters=[_strip], validators=[Length(max=255)])
    # Write-only like the password: PasswordField never renders its value back.
    oauth_client_secret = PasswordField("Client secret", validators=[Length(max=1000)])
    oauth_tenant = StringField("Tenant", filters=[_strip], default="organizations", validators=[Length(max=100)])
    oauth_authorize_url = StringField("Authorize URL", filters=[_strip], validators=[Length(max=500), HttpsUrl()])
    oauth_token_url = StringField("Token URL", filters=[_strip], validators=[Length(max=500), HttpsUrl()])
    oauth_scopes = StringField("Scopes", filters=[_strip], validators=[Length(max=1000)])
    connect = SubmitField("Connect account")

    secret_for_client = ""  # the client ID whose secret is stored ("" when none is)

    @property
    def has_client_secret(self) -> bool:
        """Tell whether a secret is stored for the client ID in the form (a secret belongs to its client)."""
        return bool(self.secret_for_client) and self.secret_for_client == (self.oauth_client_id.data or "")

    @property
    def uses_oauth(self) -> bool:
        """Tell whether the form chooses OAuth 2.0 sign-in."""
        return self.auth_method.data == "oauth2"

    def validate_oauth_client_id(self, field):
        if self.uses_oauth and not field.data:
            raise ValidationError("Enter the client (application) ID of your app registration.")

    def validate_oauth_client_secret(self, field):
        if self.uses_oauth and not field.data and not self.has_client_secret:
            raise ValidationError("Enter the client secret (its value, not its ID).")

    def validate_oauth_flow(self, field):
        if self.uses_oauth and field.data == "client_credentials" and self.oauth_provider.data == "google":
            raise ValidationError("Google offers app-only sign-in only through service accounts: choose "
                                  "the delegated flow.")

    def validate_oauth_tenant(self, field):
        if self.uses_oauth and self.oauth_provider.data == "microsoft" and not field.data:
            field.data = "organizations"

    def validate_oauth_authorize_url(self, field):
        if self._custom() and not field.data and self.oauth_flow.data == "authorization_code":
            raise ValidationError("Enter the provider's authorize URL.")

    def validate_oauth_token_url(self, field):
        if self._custom() and not field.data:
            raise ValidationError("Enter the provider's token URL.")

    def validate_oauth_scopes(self, field):
        if self._custom() and not field.data:
            raise ValidationError("Enter the scopes the mail server needs, separated by spaces.")

    def _custom(self) -> bool:
        return self.uses_oauth and self.oauth_provider.data == "custom"

    def oauth_values(self) -> OAuthValues:
        """Return the OAuth app settings typed into the form."""
        return OAuthValues(**{name: self[f"oauth_{name}"].data or "" for name in OAuthValues.__dataclass_fields__})



def oauth_initial(method: str, values: OAuthValues) -> dict:
    """Return the stored sign-in settings as a form's initial data (keyword arguments of the form)."""
    return {"auth_method": method, **{f"oauth_{name}": value for name, value in vars(values).items()}}
