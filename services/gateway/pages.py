"""gateway: the web pages. Each page is an HTML shell in the visitor's language (Simplified Chinese
first, English second) that calls the JSON API with fetch(); only /dev/sms renders data on the server.

`Pages` is a mixin of GatewayService: its `@http` entrypoints need `self.notification` (RPC proxy).
Static files are served from ./static with their content type, an ETag, and a year of caching when
asked for by their versioned URL (`/static/app.css?v=<hash>`, which every template uses).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

from contracts import DomainError
from services.gateway.api import call, http, principal_of

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
HOSPITAL_TZ = ZoneInfo("Asia/Shanghai")
LANGS = ("zh", "en")
LANG_COOKIE = "lang"
# Headers of every page: the pages load only their own scripts and styles, and are never framed.
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
# Apache ECharts at a pinned version, vendored (no CDN: the province's network is closed); README: how to update.
ECHARTS = "vendor/echarts-6.1.0.min.js"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".json": "application/json",
                ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2", ".txt": "text/plain"}


class Pages:
    """The pages of the website, the hotline console, the hospital's desks (window, doctors' lists,
    administration), the statistics and the SMS outbox."""

    notification: Any  # an RpcProxy, declared on GatewayService

    # --- patients -----------------------------------------------------------------------------

    @http("GET", "/")
    def home_page(self, request: Request) -> Response:
        return render(request, "home.html", "home")

    @http("GET", "/hospitals/<string:hospital_id>")
    def hospital_page(self, request: Request, hospital_id: str) -> Response:
        return render(request, "hospital.html", "hospital", hospital_id=hospital_id)

    @http("GET", "/departments/<string:department_id>")
    def department_page(self, request: Request, department_id: str) -> Response:
        return render(request, "department.html", "department", department_id=department_id)

    @http("GET", "/booked/<string:appointment_id>")
    def booked_page(self, request: Request, appointment_id: str) -> Response:
        return render(request, "booked.html", "booked", appointment_id=appointment_id)

    @http("GET", "/register")
    def register_page(self, request: Request) -> Response:
        return render(request, "register.html", "register")

    @http("GET", "/reset-password")
    def reset_page(self, request: Request) -> Response:
        return render(request, "reset.html", "reset")

    @http("GET", "/login")
    def login_page(self, request: Request) -> Response:
        return render(request, "login.html", "login")

    @http("GET", "/me")
    def my_page(self, request: Request) -> Response:
        return render(request, "me.html", "me")

    # --- staff --------------------------------------------------------------------------------

    @http("GET", "/operator")
    def operator_page(self, request: Request) -> Response:
        return render(request, "operator.html", "operator")

    @http("GET", "/clerk")
    def clerk_page(self, request: Request) -> Response:
        return render(request, "clerk.html", "clerk")

    @http("GET", "/doctor")
    def doctor_page(self, request: Request) -> Response:
        return render(request, "doctor.html", "doctor")

    @http("GET", "/admin")
    def admin_page(self, request: Request) -> Response:
        return render(request, "admin.html", "admin")

    @http("GET", "/analyst")
    def analyst_page(self, request: Request) -> Response:
        """The health bureau's statistics (a hospital admin's, scoped to their hospital)."""
        return render(request, "analyst.html", "analyst", echarts=ECHARTS)

    @http("GET", "/ops")
    def ops_page(self, request: Request) -> Response:
        """The platform operator's page: health, lag, backlogs, dead letters (ops_api.py; platform_admin)."""
        return render(request, "ops.html", "ops")

    @http("GET", "/dev/sms")
    def sms_outbox_page(self, request: Request) -> Response:
        """What patients would have received, for platform operators only (it holds booking codes
        and verification codes). Rendered on the server, so that a demo (or a test without a
        browser) sees the messages in the HTML itself. Off unless DEV_PAGES."""
        if not self.settings.dev_pages:  # type: ignore[attr-defined]
            return Response("not found", status=404)
        try:
            principal = principal_of(request, self.db, self.limits, self.vault)  # type: ignore[attr-defined]
        except DomainError:
            principal = None
        if principal is None:
            return redirect("/login?" + urlencode({"next": request.full_path.rstrip("?")}))
        if principal.role != "platform_admin":
            return render(request, "sms.html", "sms", status=403, messages=[], problem="sms.forbidden")
        try:
            messages, problem = call(self.notification.outbox, 100), None
        except Exception:
            messages, problem = [], "sms.unavailable"
        return render(request, "sms.html", "sms", messages=messages, problem=problem)

    # --- files --------------------------------------------------------------------------------

    @http("GET", "/static/<path:name>")
    def static_file(self, request: Request, name: str) -> Response:
        return serve_static(request, name)

    @http("GET", "/favicon.ico")
    def favicon(self, request: Request) -> Response:
        return serve_static(request, "favicon.svg")


# --- rendering ------------------------------------------------------------------------------------

def render(request: Request, template: str, page: str, status: int = 200, **context: Any) -> Response:
    lang = page_lang(request)
    messages = catalogue(lang)

    def t(key: str, **values: Any) -> str:
        text = messages.get(key, key)
        return text.format(**values) if values else text

    html = _env().get_template(template).render(
        lang=lang, other_lang="en" if lang == "zh" else "zh", t=t, static=static_url, page=page,
        messages_json=json.dumps(messages, ensure_ascii=False).replace("</", "<\\/"),
        path=request.path, lang_url={code: _with_lang(request, code) for code in LANGS}, **context,
    )
    response = Response(html, status=status, mimetype="text/html", headers=PAGE_HEADERS)
    if request.args.get("lang") in LANGS:
        response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="Lax", path="/")
    response.headers["Content-Language"] = "zh-CN" if lang == "zh" else "en"
    response.vary.add("Cookie")
    return response


def _with_lang(request: Request, lang: str) -> str:
    args = [(k, v) for k, v in request.args.items(multi=True) if k != "lang"] + [("lang", lang)]
    return request.path + "?" + urlencode(args)


def page_lang(request: Request) -> str:
    """?lang= wins (and is remembered in a cookie); then the cookie; Chinese by default."""
    for candidate in (request.args.get("lang"), request.cookies.get(LANG_COOKIE)):
        if candidate in LANGS:
            return candidate
    return "zh"


@cache
def catalogue(lang: str) -> dict[str, str]:
    """The texts of one language: {key: text}. messages.json holds both for every key."""
    raw: dict[str, list[str]] = json.loads((TEMPLATES / "messages.json").read_text(encoding="utf-8"))
    index = LANGS.index(lang)
    return {key: pair[index] for key, pair in raw.items()}


@cache
def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["local_time"] = _local_time
    return env


def _local_time(value: Any) -> str:
    """A stored timestamp as the hospitals read it: Beijing time, to the second."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)[:19]
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(HOSPITAL_TZ).strftime("%Y-%m-%d %H:%M:%S")


# --- static files ---------------------------------------------------------------------------------

@cache
def _static_index() -> dict[str, tuple[bytes, str]]:
    """Every static file: its bytes and content hash, read once per process (they ship with the code)."""
    files = {}
    for path in STATIC.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            files[path.relative_to(STATIC).as_posix()] = (data, hashlib.sha256(data).hexdigest()[:16])
    return files


def static_url(name: str) -> str:
    _, digest = _static_index()[name]
    return f"/static/{name}?v={digest}"


def serve_static(request: Request, name: str) -> Response:
    found = _static_index().get(name)
    if found is None:
        return Response("not found", status=404, mimetype="text/plain")
    data, digest = found
    suffix = Path(name).suffix.lower()
    mimetype = STATIC_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    etag = f'"{digest}"'
    if request.args.get("v") == digest:
        caching = "public, max-age=31536000, immutable"  # the URL changes when the file does
    else:
        caching = "public, max-age=0, must-revalidate"
    headers = {"Cache-Control": caching, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if etag in request.headers.get("If-None-Match", ""):
        return Response(status=304, headers=headers)
    response = Response(data, mimetype=mimetype, headers=headers)
    if mimetype.startswith("text/") or mimetype in ("application/json", "image/svg+xml"):
        response.headers["Content-Type"] = f"{mimetype}; charset=utf-8"
    return response
