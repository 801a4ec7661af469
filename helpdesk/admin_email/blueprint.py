"""The Admin → Settings → Email blueprint object, shared by its tab modules."""
from flask import Blueprint

bp = Blueprint("admin_email", __name__, url_prefix="/admin/settings/email", template_folder="templates")
