"""Forms of the ticket screens: new ticket, reply box, ticket properties, macros."""
from flask_wtf import FlaskForm
from flask_wtf.file import MultipleFileField
from wtforms.fields.choices import SelectChoice
from wtforms import EmailField, RadioField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional

from helpdesk.validators import MailAddress
from helpdesk.models.tickets import PRIORITIES, STATUSES


class NewTicketForm(FlaskForm):
    contact_email = EmailField("Contact email", validators=[DataRequired(), Length(max=254), MailAddress()])
    contact_name = StringField("Contact name", validators=[Optional(), Length(max=200)])
    title = StringField("Title", validators=[DataRequired(), Length(max=500)])
    description = TextAreaField("Description", validators=[DataRequired()])
    priority = SelectField("Priority", choices=[SelectChoice(p, p.title()) for p in PRIORITIES], default="normal")


class ReplyForm(FlaskForm):
    visibility = RadioField("Type", choices=[SelectChoice("public", "Public reply (emailed to the contact)"),
                                             SelectChoice("internal", "Internal note (agents only)")], default="public")
    body = TextAreaField("Message", validators=[DataRequired(message="Write something first.")])
    files = MultipleFileField("Attach files")


class TicketPropertiesForm(FlaskForm):
    status = SelectField("Status", choices=[SelectChoice(s, s.title()) for s in STATUSES])
    priority = SelectField("Priority", choices=[SelectChoice(p, p.title()) for p in PRIORITIES])
    assignee_id = SelectField("Assignee", coerce=int)


class MacroForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    body = TextAreaField("Text", validators=[DataRequired()])
