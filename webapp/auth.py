"""Who may use the dashboard: a Jupyter-style token, a login session, and Origin and Host checks.

- The token is generated at first start into ``<DATA_DIR>/token`` (mode 0600; ``TOKEN`` in the
  configuration overrides it). A browser logs in once, on /login or by opening any page with
  ``?token=...``, and then holds Flask's signed session cookie (HttpOnly, SameSite=Lax; the key is
  ``<DATA_DIR>/secret_key``). Programs send ``Authorization: Bearer <token>``. A Socket.IO client
  connects with the cookie, ``auth={"token": ...}`` or the same header.
- A state-changing request that comes from a browser (it names an Origin, else a Referer) must come
  from the dashboard's own origin: a page elsewhere cannot post to it with the user's cookie.
  ``Authorization`` headers are exempt: no page can make a browser send one to another origin.
- The Host header must name this server (an IP address, localhost, this machine's names, or one of
  ``ALLOWED_HOSTS``): a DNS-rebinding page reaches the server under its own domain name and gets 403.

With ``AUTH`` off (``--no-auth``, loopback only) the Origin and Host checks still apply.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import socket
import threading
import time
from urllib.parse import urlencode, urlsplit

from flask import (Blueprint, current_app, jsonify, redirect, render_template, request, session,
                   url_for)

TOKEN_FILE = "token"
SECRET_KEY_FILE = "secret_key"
# the sessions ended by Log out, kept until their cookies would have expired: a copy of such a
# cookie (another browser, a stolen one) is refused too, across restarts
ENDED_SESSIONS_FILE = "ended_sessions"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# reachable without logging in: the login page itself and the assets it loads
_OPEN_ENDPOINTS = ("auth.login", "static")

bp = Blueprint("auth", __name__)
log = logging.getLogger(__name__)


def init_app(app):
    """Load (or create) the token and the session key, and guard every request of `app`."""
    data_dir = app.config["DATA_DIR"]
    token_path = os.path.join(data_dir, TOKEN_FILE)
    created, followed = False, None
    if app.config.get("TOKEN"):
        app.config["TOKEN"] = str(app.config["TOKEN"])  # WEBAPP_TOKEN=123 arrives as a number
    else:
        app.config["TOKEN"], created = _secret(token_path)
        followed = _file_state(token_path)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"], _ = _secret(os.path.join(data_dir, SECRET_KEY_FILE))
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    # followed: the token file's state when last read (None: the token was given, not a file)
    app.extensions["auth"] = {"token_created": created, "token_path": token_path,
                              "followed": followed,
                              "ended": EndedSessions(os.path.join(data_dir, ENDED_SESSIONS_FILE),
                                                     app.permanent_session_lifetime.total_seconds())}
    app.register_blueprint(bp)
    app.before_request(_guard)
    app.after_request(_no_framing)


def _no_framing(response):
    """No page of the dashboard inside another site's frame: a framed page turns two clicks on
    the other site into a Delete with the user's cookie (clickjacking)."""
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
    return response


def _secret(path):
    """The secret kept in `path`, created (mode 0600, never readable by others) if missing."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path) as f:
            value = f.read().strip()
        if value:
            return value, False
        raise RuntimeError("{} is empty: delete it and a new one is made".format(path))
    value = secrets.token_hex(24)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return value, True


def _file_state(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _follow_token_file():
    """A token file replaced or deleted while the server runs takes effect at once, as at a
    restart: the old token and every session made with it end (a deleted file gets a new token).
    One stat per request."""
    auth = current_app.extensions["auth"]
    if auth["followed"] is None:
        return
    state = _file_state(auth["token_path"])
    if state == auth["followed"]:
        return
    try:
        current_app.config["TOKEN"], _ = _secret(auth["token_path"])
    except (OSError, RuntimeError) as e:  # e.g. emptied: the token stays until it is readable
        log.warning("the token file cannot be read, the token stays: %s", e)
    auth["followed"] = _file_state(auth["token_path"])


# --- checks --------------------------------------------------------------------------------------

def host_allowed(host_header, allowed) -> bool:
    """Whether a Host header ("name:port", "[::1]:5000") names this server: any IP address (a
    rebinding page always uses a domain name), a loopback name, this machine's names, or one of
    `allowed` ("*" allows every name)."""
    try:
        name = urlsplit("//" + (host_header or "")).hostname
    except ValueError:
        return False
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    names = {n.lower() for n in allowed} | _machine_names()
    return "*" in names or name.lower() in names


@functools.lru_cache(maxsize=1)
def _machine_names():
    """localhost and this machine's names, looked up once: getfqdn may ask DNS, and every request
    checks its Host."""
    return frozenset({"localhost", socket.gethostname().lower(), socket.getfqdn().lower()})


def _same_origin() -> bool:
    """A browser's request (Origin, else Referer) from this server's own origin; a request that
    names neither did not come from a page."""
    source = request.headers.get("Origin") or request.headers.get("Referer")
    if source is None:
        return True
    try:
        return urlsplit(source).netloc.lower() == request.host.lower()
    except ValueError:
        return False


def _bearer() -> str | None:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def token_matches(value) -> bool:
    token = current_app.config["TOKEN"]
    return isinstance(value, str) and hmac.compare_digest(value.encode(), token.encode())


def _session_mark() -> str:
    """What a logged-in session holds: derived from the token, so a new token ends every session."""
    return hashlib.sha256(("session:" + current_app.config["TOKEN"]).encode()).hexdigest()


def _logged_in() -> bool:
    mark, sid = session.get("auth"), session.get("sid")
    return isinstance(mark, str) and hmac.compare_digest(mark, _session_mark()) and \
        isinstance(sid, str) and sid not in current_app.extensions["auth"]["ended"]


class EndedSessions:
    """The ids of the sessions that Log out ended, in memory and appended to `path` (mode 0600)
    with their time; an entry older than `lifetime_s` (its cookie's lifetime) is dropped when the
    dashboard starts."""

    def __init__(self, path, lifetime_s):
        self.path, self.lock = path, threading.Lock()
        now, kept = time.time(), {}
        try:
            with open(path) as f:
                for line in f:
                    sid, _, ended = line.strip().partition(" ")
                    try:
                        if sid and now - float(ended) < lifetime_s:
                            kept[sid] = float(ended)
                    except ValueError:
                        continue  # a line cut short by a crash
        except FileNotFoundError:
            pass
        self.ended = kept
        self._write("".join("{} {}\n".format(s, t) for s, t in kept.items()), "w")

    def __contains__(self, sid):
        return sid in self.ended

    def add(self, sid):
        with self.lock:
            self.ended[sid] = time.time()
            self._write("{} {}\n".format(sid, self.ended[sid]), "a")

    def _write(self, text, mode):
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else
                                                             os.O_TRUNC), 0o600)
        with os.fdopen(fd, mode) as f:
            f.write(text)


def _refuse(status, message):
    if request.path.startswith("/api/"):
        return jsonify(error=message), status
    return render_template("refused.html", message=message), status


def _guard():
    """Every request: Host, then Origin for state changes, then the token."""
    _follow_token_file()
    if not host_allowed(request.host, current_app.config["ALLOWED_HOSTS"]):
        return _refuse(403, "this server does not answer to the host name {!r}; start it with "
                            "--allowed-hosts to add a name".format(request.host))
    bearer = _bearer()
    if request.method not in _SAFE_METHODS and bearer is None and not _same_origin():
        return _refuse(403, "a request from another site was refused (its Origin is not this "
                            "dashboard's)")
    if not current_app.config["AUTH"] or request.endpoint in _OPEN_ENDPOINTS:
        return None
    if bearer is not None:
        return None if token_matches(bearer) else _refuse(401, "the bearer token is wrong")
    if _logged_in():
        return None
    if request.method == "GET" and token_matches(request.args.get("token")):
        _log_in()  # a login URL: keep the session, drop the token from the address bar
        query = {k: v for k, v in request.args.items() if k != "token"}
        return redirect(request.path + ("?" + urlencode(query) if query else ""))
    if request.path.startswith("/api/"):
        return jsonify(error="authentication required: log in, or send 'Authorization: Bearer "
                             "<token>' (the token is in the data directory's token file)"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def check_socket(auth) -> str | None:
    """Why a Socket.IO connection is refused, or None (called by the connect handler)."""
    _follow_token_file()
    if not host_allowed(request.host, current_app.config["ALLOWED_HOSTS"]):
        return "host not allowed"
    if not current_app.config["AUTH"] or _logged_in():
        return None
    token = (auth.get("token") if isinstance(auth, dict) else None) or _bearer()
    return None if token_matches(token) else "authentication required"


def _log_in():
    session.clear()
    session["auth"] = _session_mark()
    session["sid"] = secrets.token_urlsafe(18)  # what Log out ends, server-side
    session.permanent = True


def _local_path(target) -> str:
    """`target` if it is a path on this server, else "/": no redirect to another site. Browsers
    drop tabs and line breaks from a URL ("/\t/evil.example" is "//evil.example" to them), and a
    line break in a header is refused: no whitespace or control character passes."""
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//") \
            or "\\" in target or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return url_for("pages.runs")
    return target


# --- pages ---------------------------------------------------------------------------------------

@bp.route("/login", methods=["GET", "POST"])
def login():
    target = _local_path(request.values.get("next"))
    if not current_app.config["AUTH"] or _logged_in():
        return redirect(target)
    if request.method == "GET":
        return render_template("login.html", next=target)
    if token_matches(request.form.get("token", "").strip()):
        _log_in()
        return redirect(target)
    return render_template("login.html", next=target, error="That token is not this "
                           "dashboard's token."), 401


@bp.post("/logout")
def logout():
    if isinstance(session.get("sid"), str):
        current_app.extensions["auth"]["ended"].add(session["sid"])
    session.clear()
    return redirect(url_for("auth.login"))
