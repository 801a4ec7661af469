"""Agents' ticket screens: list, detail with thread and reply box, macros, attachment downloads."""
from flask import Blueprint, Response, flash, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup
from sqlalchemy.orm import selectinload
from wtforms.fields.choices import SelectChoice

from helpdesk import search, security
from helpdesk.extensions import db
from helpdesk.mail.html import block_remote_images
from helpdesk.mail.render import CATALOGUE, MACRO_VARIABLES, render_text, unknown_placeholders
from helpdesk.models import Agent, Attachment, Comment, Customer, Macro, Ticket, TicketEvent
from helpdesk.models.tickets import OPEN_STATUSES, STATUSES
from helpdesk.services import listing
from helpdesk.services import tickets as ticket_service
from helpdesk.services.attachments import add_attachment, attachment_store
from helpdesk.services.contacts import find_or_create_contact
from helpdesk.services.mailboxes import list_mailboxes
from helpdesk.services.placeholders import ticket_values
from helpdesk.tickets.forms import MacroForm, NewTicketForm, ReplyForm, TicketPropertiesForm
from helpdesk.web import agent_required, render_htmx

bp = Blueprint("tickets", __name__, template_folder="templates")


@bp.route("/")
@agent_required
def home():
    return redirect(url_for("tickets.index"))


@bp.route("/tickets")
@agent_required
def index():
    filters = {k: request.args.get(k, "").strip() for k in ("status", "customer", "assignee", "mailbox", "q")}
    customer = _customer_filter(filters["customer"])
    more = bool(request.args.get("before") or request.args.get("page"))
    context = dict(filters=filters, customer=customer, agents=_agents(), statuses=STATUSES,
                   mailboxes=list_mailboxes())
    if filters["q"]:
        context.update(_search_rows(filters, customer))
    else:
        page = listing.newest_first(_with_people(_filtered(filters, customer)), Ticket,
                                    before=request.args.get("before"), count=not more)
        more_url = _more_url(before=page.next_cursor) if page.next_cursor else None
        context.update(rows=[(t, None) for t in page.items], page=page, more_url=more_url)
    partial = "tickets/_ticket_page.html" if more else "tickets/_ticket_rows.html"
    return render_htmx("tickets/index.html", partial, **context)


def _search_rows(filters: dict, customer: Customer | None) -> dict:
    """Return a page of search results: the tickets, each with the excerpt that matched."""
    results = search.search_tickets(filters["q"], statuses=_statuses(filters["status"]),
                                    customer_id=customer.id if customer else _no_customer(filters),
                                    mailbox_id=int(filters["mailbox"]) if filters["mailbox"].isdigit() else None,
                                    page=max(request.args.get("page", 1, type=int), 1))
    tickets = _with_people(db.select(Ticket).where(Ticket.id.in_([h.ticket_id for h in results.hits])))
    by_id = {t.id: t for t in db.session.scalars(tickets)}
    rows = [(by_id[h.ticket_id], h) for h in results.hits if h.ticket_id in by_id]
    more_url = _more_url(page=results.page + 1) if results.has_next else None
    return dict(rows=rows, results=results, more_url=more_url)


def _filtered(filters: dict, customer: Customer | None):
    query = db.select(Ticket)
    if statuses := _statuses(filters["status"]):
        query = query.where(Ticket.status.in_(statuses))
    if customer is not None or filters["customer"]:
        query = query.where(Ticket.customer_id == (customer.id if customer else -1))
    if filters["assignee"] == "me":
        query = query.where(Ticket.assignee_id == current_user.id)
    elif filters["assignee"] == "none":
        query = query.where(Ticket.assignee_id.is_(None))
    elif filters["assignee"].isdigit():
        query = query.where(Ticket.assignee_id == int(filters["assignee"]))
    if filters["mailbox"].isdigit():
        query = query.where(Ticket.mailbox_id == int(filters["mailbox"]))
    return query


def _statuses(status: str) -> tuple[str, ...]:
    if status == "open":
        return OPEN_STATUSES
    return (status,) if status in STATUSES else ()


def _customer_filter(value: str) -> Customer | None:
    """Find the customer the filter names: by id (a link) or by its exact name (the type-ahead field)."""
    if not value:
        return None
    if value.isdigit():
        return db.session.get(Customer, int(value))
    return db.session.scalar(db.select(Customer).where(Customer.name == value))


def _no_customer(filters: dict) -> int | None:
    return -1 if filters["customer"] else None  # a name that is no customer's matches no ticket


def _with_people(query):
    return query.options(selectinload(Ticket.contact), selectinload(Ticket.customer), selectinload(Ticket.assignee))


def _more_url(**position) -> str:
    args = {k: v for k, v in request.args.items() if k not in ("before", "page")}
    return url_for("tickets.index", **args, **position)


@bp.route("/tickets/new", methods=["GET", "POST"])
@agent_required
def new():
    form = NewTicketForm()
    if form.validate_on_submit():
        contact = find_or_create_contact(form.contact_email.data, form.contact_name.data or "")
        ticket = ticket_service.open_ticket(title=form.title.data, description=form.description.data,
                                            contact=contact, priority=form.priority.data, agent=current_user)
        db.session.commit()
        flash(f"Ticket #{ticket.number} created.", "success")
        return redirect(url_for("tickets.detail", ticket_id=ticket.id))
    return render_template("tickets/new.html", form=form)


@bp.route("/tickets/<int:ticket_id>")
@agent_required
def detail(ticket_id: int):
    # The whole thread in a fixed number of statements, however long it is.
    thread = selectinload(Ticket.comments)
    ticket = db.first_or_404(db.select(Ticket).where(Ticket.id == ticket_id).options(
        thread.selectinload(Comment.attachments), thread.selectinload(Comment.author_agent),
        thread.selectinload(Comment.author_contact), selectinload(Ticket.attachments),
        selectinload(Ticket.contact), selectinload(Ticket.customer)))
    return _detail_page(ticket, ReplyForm())


@bp.app_template_global()
def mail_html(html: str, mail: str) -> tuple[Markup, int]:
    """Return a mail's stored HTML for the thread, and how many remote images were held back.

    Remote images load only for the mail named by ?remote_images= (its "Show remote images"
    link); every other mail is shown without them.
    """
    if mail and request.args.get("remote_images") == mail:
        security.allow_remote_images()
        return Markup(html), 0
    shown, blocked = block_remote_images(html)
    return Markup(shown), blocked


@bp.route("/tickets/<int:ticket_id>/comments", methods=["POST"])
@agent_required
def reply(ticket_id: int):
    ticket = db.get_or_404(Ticket, ticket_id)
    form = ReplyForm()
    if not form.validate_on_submit():
        return _detail_page(ticket, form), 422
    comment = ticket_service.add_comment(ticket, form.body.data, public=form.visibility.data == "public",
                                         agent=current_user)
    for upload in form.files.data or []:
        if upload and upload.filename:
            add_attachment(ticket, upload.stream, filename=upload.filename,
                           content_type=upload.mimetype or "application/octet-stream", comment=comment)
    db.session.commit()
    flash("Reply sent." if comment.public else "Internal note added.", "success")
    return redirect(url_for("tickets.detail", ticket_id=ticket.id, _anchor=f"comment-{comment.id}"))


@bp.route("/tickets/<int:ticket_id>/properties", methods=["POST"])
@agent_required
def properties(ticket_id: int):
    ticket = db.get_or_404(Ticket, ticket_id)
    form = _properties_form(ticket)
    if form.validate_on_submit():
        assignee = db.session.get(Agent, form.assignee_id.data) if form.assignee_id.data else None
        if assignee != ticket.assignee:
            ticket_service.assign(ticket, assignee, agent=current_user)
        if form.priority.data != ticket.priority:
            ticket_service.set_priority(ticket, form.priority.data, agent=current_user)
        ticket_service.set_status(ticket, form.status.data, agent=current_user)
        db.session.commit()
        flash("Ticket updated.", "success")
    else:
        flash("The ticket was not changed: " + "; ".join(e for errs in form.errors.values() for e in errs), "error")
    return redirect(url_for("tickets.detail", ticket_id=ticket.id))


@bp.route("/tickets/<int:ticket_id>/resolve", methods=["POST"])
@agent_required
def resolve(ticket_id: int):
    ticket = db.get_or_404(Ticket, ticket_id)
    ticket_service.set_status(ticket, "resolved", agent=current_user)
    db.session.commit()
    flash(f"Ticket #{ticket.number} resolved.", "success")
    return redirect(url_for("tickets.detail", ticket_id=ticket.id))


@bp.route("/tickets/<int:ticket_id>/macro")
@agent_required
def apply_macro(ticket_id: int):
    """Fill the reply box with a macro whose `$variables` are taken from the ticket."""
    ticket = db.get_or_404(Ticket, ticket_id)
    macro = db.get_or_404(Macro, request.args.get("macro_id", type=int) or 0)
    form = ReplyForm()
    rendered = render_text(macro.body, ticket_values(ticket, current_user), MACRO_VARIABLES)
    form.body.data = rendered.text
    return render_template("tickets/_reply_body.html", form=form, unknown=rendered.unknown)


@bp.route("/attachments/<int:attachment_id>")
@agent_required
def download(attachment_id: int):
    """Stream an attachment through the app (never a public bucket URL)."""
    attachment = db.get_or_404(Attachment, attachment_id)
    inline = attachment.inline and attachment.content_type.startswith("image/") and request.args.get("inline")
    response = Response(attachment_store().open(attachment.storage_key), mimetype=attachment.content_type)
    response.headers["Content-Length"] = str(attachment.size)
    response.headers["X-Content-Type-Options"] = "nosniff"
    # Stored mail parts may be HTML or SVG: never let them run as a page of ours.
    response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; img-src 'self'"
    disposition = "inline" if inline else "attachment"
    response.headers.set("Content-Disposition", disposition, filename=attachment.filename)
    return response


@bp.route("/macros")
@agent_required
def macros():
    items = db.session.scalars(db.select(Macro).order_by(Macro.name)).all()
    return render_template("tickets/macros.html", macros=items)


@bp.route("/macros/new", methods=["GET", "POST"])
@bp.route("/macros/<int:macro_id>/edit", methods=["GET", "POST"])
@agent_required
def edit_macro(macro_id: int | None = None):
    macro = db.get_or_404(Macro, macro_id) if macro_id else Macro()
    form = MacroForm(obj=macro)
    if form.validate_on_submit():
        clash = db.session.scalar(db.select(Macro).filter(Macro.name == form.name.data, Macro.id != macro.id))
        if clash is not None:
            form.name.errors.append("Another macro has this name.")
        else:
            form.populate_obj(macro)
            db.session.add(macro)
            db.session.commit()
            flash(f"Macro “{macro.name}” saved.", "success")
            return redirect(url_for("tickets.macros"))
    unknown = unknown_placeholders(form.body.data or "", MACRO_VARIABLES)
    return render_template("tickets/macro_form.html", form=form, macro=macro, unknown=unknown,
                           variables=[(name, CATALOGUE[name]) for name in MACRO_VARIABLES])


@bp.route("/macros/<int:macro_id>/delete", methods=["POST"])
@agent_required
def delete_macro(macro_id: int):
    macro = db.get_or_404(Macro, macro_id)
    db.session.delete(macro)
    db.session.commit()
    flash(f"Macro “{macro.name}” deleted.", "success")
    return redirect(url_for("tickets.macros"))


def _agents() -> list[Agent]:
    return db.session.scalars(db.select(Agent).where(Agent.active.is_(True)).order_by(Agent.name)).all()


def _properties_form(ticket: Ticket) -> TicketPropertiesForm:
    form = TicketPropertiesForm(obj=ticket, assignee_id=ticket.assignee_id or 0)
    form.assignee_id.choices = [SelectChoice(0, "— Nobody —")] + [SelectChoice(a.id, a.name) for a in _agents()]
    return form


def _detail_page(ticket: Ticket, reply_form: ReplyForm):
    history = db.session.scalars(db.select(TicketEvent).filter_by(ticket_id=ticket.id)
                                 .options(selectinload(TicketEvent.agent))
                                 .order_by(TicketEvent.created_at.desc(), TicketEvent.id.desc()).limit(50)).all()
    return render_template("tickets/detail.html", ticket=ticket, form=reply_form,
                           properties=_properties_form(ticket), history=history,
                           macros=db.session.scalars(db.select(Macro).order_by(Macro.name)).all())
