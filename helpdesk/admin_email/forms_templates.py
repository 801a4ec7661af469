"""The form of the Templates tab: one notification's subject, body and on/off switch."""
from flask_wtf import FlaskForm
from wtforms import BooleanField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length


def _strip(value: str | None) -> str | None:
    return value.strip() if value else value


def _unix_newlines(value: str | None) -> str | None:
    # Browsers submit textareas with CRLF; stored text keeps one convention.
    return value.replace("\r\n", "\n") if value else value


class TemplateForm(FlaskForm):
    subject = StringField("Subject", filters=[_strip],
                          validators=[DataRequired(message="Write a subject."), Length(max=500)])
    body = TextAreaField("Body", filters=[_unix_newlines],
                         validators=[DataRequired(message="Write the text of the mail.")])
    enabled = BooleanField("Enabled: send this notification")
