"""Contacts and customers, with the customer domains that link senders to customers."""
from flask import Blueprint, flash, redirect, render_template, request, url_for
from sqlalchemy import or_
from sqlalchemy.orm import selectinload
from wtforms.fields.choices import SelectChoice

from helpdesk.extensions import db
from helpdesk.models import Contact, Customer, CustomerDomain, Ticket
from helpdesk.people.forms import ContactForm, CustomerForm
from helpdesk.services import listing
from helpdesk.services.contacts import find_or_create_contact
from helpdesk.web import agent_required, render_htmx

bp = Blueprint("people", __name__, template_folder="templates")


@bp.route("/contacts")
@agent_required
def contacts():
    q = request.args.get("q", "").strip()
    query = db.select(Contact).options(selectinload(Contact.customer))
    if q:
        query = query.where(or_(Contact.name.ilike(f"%{q}%"), Contact.email.ilike(f"%{q}%")))
    after = request.args.get("after")
    page = listing.alphabetical(query, Contact.name, Contact.id, after=after, count=not after)
    more_url = url_for("people.contacts", q=q or None, after=page.next_cursor) if page.next_cursor else None
    partial = "people/_contact_page.html" if after else "people/_contact_rows.html"
    return render_htmx("people/contacts.html", partial, page=page, q=q, more_url=more_url)


@bp.route("/contacts/new", methods=["GET", "POST"])
@bp.route("/contacts/<int:contact_id>", methods=["GET", "POST"])
@agent_required
def edit_contact(contact_id: int | None = None):
    contact = db.get_or_404(Contact, contact_id) if contact_id else Contact()
    form = ContactForm(obj=contact, customer_id=contact.customer_id or 0)
    form.customer_id.choices = [SelectChoice(0, "— None —")] + [
        SelectChoice(c.id, c.name) for c in db.session.scalars(db.select(Customer).order_by(Customer.name))]
    if form.validate_on_submit():
        holder = find_or_create_contact(form.email.data, create=False)
        if holder is not None and holder is not contact:
            form.email.errors.append("Another contact has this email.")
        else:
            contact.name, contact.email = form.name.data or "", form.email.data
            contact.customer_id = form.customer_id.data or None
            db.session.add(contact)
            db.session.commit()
            flash(f"Contact {contact.email} saved.", "success")
            return redirect(url_for("people.contacts"))
    tickets = []
    if contact.id:
        tickets = db.session.scalars(db.select(Ticket).filter_by(contact_id=contact.id)
                                     .order_by(Ticket.created_at.desc()).limit(20)).all()
    return render_template("people/contact_form.html", form=form, contact=contact, tickets=tickets)


@bp.route("/customers/options")
@agent_required
def customer_options():
    """The type-ahead of a customer field: the first customers whose name holds what was typed."""
    q = request.args.get("customer", "").strip()
    query = db.select(Customer).order_by(Customer.name).limit(20)
    if q:
        query = query.where(Customer.name.ilike(f"%{q}%"))
    return render_template("people/_customer_options.html", options=db.session.scalars(query).all())


@bp.route("/customers")
@agent_required
def customers():
    q = request.args.get("q", "").strip()
    query = db.select(Customer).order_by(Customer.name)
    if q:
        query = query.where(Customer.name.ilike(f"%{q}%"))
    page = db.paginate(query, per_page=25, error_out=False)
    return render_htmx("people/customers.html", "people/_customer_rows.html", page=page, q=q)


@bp.route("/customers/new", methods=["GET", "POST"])
@bp.route("/customers/<int:customer_id>", methods=["GET", "POST"])
@agent_required
def edit_customer(customer_id: int | None = None):
    customer = db.get_or_404(Customer, customer_id) if customer_id else Customer()
    form = CustomerForm(obj=customer)
    if request.method == "GET":
        form.domains.data = "\n".join(d.domain for d in customer.domains)
    if form.validate_on_submit() and _names_free(form, customer):
        customer.name, customer.notes = form.name.data.strip(), form.notes.data or ""
        wanted = form.domain_list()
        customer.domains = [d for d in customer.domains if d.domain in wanted] + [
            CustomerDomain(domain=d) for d in wanted if d not in {x.domain for x in customer.domains}]
        db.session.add(customer)
        db.session.commit()
        flash(f"Customer {customer.name} saved.", "success")
        return redirect(url_for("people.customers"))
    return render_template("people/customer_form.html", form=form, customer=customer)


def _names_free(form: CustomerForm, customer: Customer) -> bool:
    """Check that the name and domains belong to no other customer; put errors beside the fields."""
    ok = True
    if db.session.scalar(db.select(Customer).filter(Customer.name == form.name.data.strip(),
                                                    Customer.id != customer.id)):
        form.name.errors.append("Another customer has this name.")
        ok = False
    taken = db.session.scalars(db.select(CustomerDomain).filter(
        CustomerDomain.domain.in_(form.domain_list()), CustomerDomain.customer_id != customer.id)).all()
    if taken:
        form.domains.errors.extend(f"{d.domain} already belongs to {d.customer.name}." for d in taken)
        ok = False
    return ok
