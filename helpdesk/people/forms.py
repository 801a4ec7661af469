"""Forms for contacts and customers (with their customer domains)."""
import re

from flask_wtf import FlaskForm
from wtforms import EmailField, SelectField, StringField, TextAreaField
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from helpdesk.validators import MailAddress
from helpdesk.mail.freemail import is_free_mail

DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class ContactForm(FlaskForm):
    name = StringField("Name", validators=[Optional(), Length(max=200)])
    email = EmailField("Email", validators=[DataRequired(), Length(max=254), MailAddress()])
    customer_id = SelectField("Customer", coerce=int)


class CustomerForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    domains = TextAreaField("Customer Domains", validators=[Optional()],
                            description="One per line, e.g. acme.com. Senders from these domains are "
                                        "linked to this customer. Free-mail domains are not allowed.")
    notes = TextAreaField("Notes", validators=[Optional()])

    def domain_list(self) -> list[str]:
        """Return the typed domains, cleaned, without repeats."""
        seen: list[str] = []
        for line in (self.domains.data or "").replace(",", "\n").splitlines():
            domain = line.strip().lower().lstrip("@")
            if domain and domain not in seen:
                seen.append(domain)
        return seen

    def validate_domains(self, field):
        for domain in self.domain_list():
            if not DOMAIN.match(domain):
                raise ValidationError(f"“{domain}” is not a domain name.")
            if is_free_mail(domain):
                raise ValidationError(f"“{domain}” is a free-mail domain: anyone can have an address there.")
