"""Forms for managing agents, inviting them, and SLA targets."""
from flask_wtf import FlaskForm
from wtforms.fields.choices import SelectChoice
from wtforms import EmailField, FieldList, FormField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange

from helpdesk.validators import MailAddress
from helpdesk.models.people import ROLES


class AgentForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), MailAddress()])
    role = SelectField("Role", choices=[SelectChoice(r, r.title()) for r in ROLES], default="agent")
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200)])


class SlaRowForm(FlaskForm):
    class Meta:
        csrf = False  # a sub-form: the outer form carries the token

    priority = StringField("Priority")
    first_response_minutes = IntegerField("First response (minutes)", validators=[NumberRange(min=1, max=525600)])
    resolution_minutes = IntegerField("Resolution (minutes)", validators=[NumberRange(min=1, max=525600)])


class SlaForm(FlaskForm):
    rows = FieldList(FormField(SlaRowForm))


class InviteForm(FlaskForm):
    """Invite someone by email; they choose their own name and password from the link."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254), MailAddress()])
    name = StringField("Name (optional, for the greeting)", validators=[Length(max=200)])
    role = SelectField("Role", choices=[SelectChoice(r, r.title()) for r in ROLES], default="agent")


class AcceptInviteForm(FlaskForm):
    name = StringField("Your name", validators=[DataRequired(), Length(max=200)])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(min=8, max=200, message="Use at least 8 characters (and at most 200).")])
    confirm = PasswordField("Repeat the password",
                            validators=[DataRequired(), EqualTo("password", "The two passwords differ.")])
