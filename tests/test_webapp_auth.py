"""Who may use the dashboard (webapp/auth.py): the token, the login session, the Origin check on
state changes, the Host allow-list, the same for Socket.IO, and the server's refusal to run
without a token beyond loopback. The browser's side is in test_browser.py."""
import os
import stat
import subprocess
import sys

import pytest

from processes import ROOT, dashboard_app
from webapp.extensions import db, socketio
from webapp.models import Run

pytestmark = pytest.mark.unit

DASHBOARD_CONFIG = {"LOCAL_AGENT": False, "ALLOWED_HOSTS": ("nas.lab.example",)}


@pytest.fixture
def anonymous(app):
    """A client that has not logged in."""
    return app.test_client()


@pytest.fixture
def run_id(app):
    with app.app_context():
        run = Run(name="active", status="running", config="{}")
        db.session.add(run)
        db.session.commit()
        return run.id


def test_the_token_is_generated_once_and_kept_private(app, tmp_path):
    path = os.path.join(app.config["DATA_DIR"], "token")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.join(app.config["DATA_DIR"], "secret_key")).st_mode) == 0o600
    with open(path) as f:
        assert f.read().strip() == app.config["TOKEN"]
    assert len(app.config["TOKEN"]) >= 32
    with dashboard_app(app.config["DATA_DIR"], LOCAL_AGENT=False) as again:  # a restart
        assert again.config["TOKEN"] == app.config["TOKEN"]
        assert again.config["SECRET_KEY"] == app.config["SECRET_KEY"]
        assert again.extensions["auth"]["token_created"] is False
    with dashboard_app(tmp_path, LOCAL_AGENT=False) as other:  # another data directory
        assert other.config["TOKEN"] != app.config["TOKEN"]


def test_without_the_token_nothing_can_be_read_or_changed(anonymous, run_id):
    for path in ("/api/runs", "/api/runs/{}".format(run_id), "/api/devices", "/api/defaults",
                 "/api/runs/{}/samples.csv".format(run_id)):
        response = anonymous.get(path)
        assert response.status_code == 401 and "Bearer" in response.json["error"], path
    assert anonymous.post("/api/runs/{}/cancel".format(run_id)).status_code == 401
    assert anonymous.delete("/api/runs/{}".format(run_id)).status_code == 401
    response = anonymous.get("/runs/{}".format(run_id))
    assert response.status_code == 302
    assert response.location == "/login?next=/runs/{}".format(run_id)
    assert anonymous.get("/static/js/common.js").status_code == 200  # the login page's assets
    wrong = anonymous.get("/api/runs", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "wrong" in wrong.json["error"]


def test_a_program_sends_the_token_as_a_bearer_header(app, anonymous):
    response = anonymous.get("/api/runs", headers={"Authorization": "Bearer " + app.config["TOKEN"]})
    assert response.status_code == 200


def test_logging_in_sets_a_session_cookie(app, anonymous):
    page = anonymous.post("/login", data={"token": "wrong", "next": "/devices"})
    assert page.status_code == 401 and b"not this dashboard&#39;s token" in page.data
    assert anonymous.get("/api/runs").status_code == 401
    response = anonymous.post("/login", data={"token": app.config["TOKEN"], "next": "/devices"})
    assert response.status_code == 302 and response.location == "/devices"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and app.config["TOKEN"] not in cookie
    assert anonymous.get("/api/runs").status_code == 200
    assert anonymous.post("/logout", headers={"Origin": "http://localhost"}).status_code == 302
    assert anonymous.get("/api/runs").status_code == 401


def test_a_login_url_logs_in_and_leaves_the_token_out_of_the_address(app, anonymous):
    response = anonymous.get("/devices?token={}&x=1".format(app.config["TOKEN"]))
    assert response.status_code == 302 and response.location == "/devices?x=1"
    assert anonymous.get("/api/runs").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example",
                                    "/\t/evil.example", "/\n/x", "/ /evil.example"])
def test_login_never_redirects_to_another_site(app, anonymous, target):
    response = anonymous.get("/login", query_string={"next": target})
    assert response.status_code == 200 and 'value="/"' in response.get_data(as_text=True)
    response = anonymous.post("/login", data={"token": app.config["TOKEN"], "next": target})
    assert response.status_code == 302 and response.location == "/"
    response = anonymous.get("/login", query_string={"next": target})  # already logged in
    assert response.status_code == 302 and response.location == "/"


def test_no_page_can_be_framed_by_another_site(app, anonymous):
    for path in ("/login", "/api/runs"):
        response = anonymous.get(path)
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_every_page_carries_the_servers_facts_for_its_scripts(client):
    """Run statuses, the space's ops and its stages are the server's (webapp/pages.py), sent with
    every page, never declared again in JavaScript."""
    import html
    import json
    import re

    from nano_agent.space import ALL_OPS, STAGES
    from webapp.models import RUN_ACTIVE_STATUSES
    for path in ("/", "/devices", "/login"):
        page = client.get(path).get_data(as_text=True)
        found = re.search(r'<script id="server-facts" type="application/json">(.*?)</script>', page)
        facts = json.loads(html.unescape(found.group(1)))
        assert facts == {"active": list(RUN_ACTIVE_STATUSES), "ops": [op.name for op in ALL_OPS],
                         "stage_blocks": [blocks for _, blocks, _ in STAGES]}, path


def test_a_body_over_a_megabyte_is_refused_unread(app, anonymous):
    anonymous.post("/login", data={"token": app.config["TOKEN"]})
    response = anonymous.post("/api/groups", data=b"[" + b"1," * 600_000 + b"1]",
                              content_type="application/json")
    assert response.status_code == 413


def test_log_out_ends_the_session_for_every_copy_of_its_cookie(app, tmp_path):
    """A copied cookie still worked after Log out (the session lived in the cookie alone): the
    server now keeps the sessions Log out ended, across a restart too."""
    browser, copy = app.test_client(), app.test_client()
    response = browser.post("/login", data={"token": app.config["TOKEN"]})
    cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)
    copy.set_cookie(cookie[0], cookie[1])
    assert copy.get("/api/runs").status_code == 200  # the copy works while the session lasts
    other = app.test_client()
    other.post("/login", data={"token": app.config["TOKEN"]})
    browser.post("/logout", headers={"Origin": "http://localhost"})
    assert copy.get("/api/runs").status_code == 401
    assert other.get("/api/runs").status_code == 200  # another session goes on
    ended = os.path.join(app.config["DATA_DIR"], "ended_sessions")
    assert stat.S_IMODE(os.stat(ended).st_mode) == 0o600
    with dashboard_app(app.config["DATA_DIR"], LOCAL_AGENT=False,
                       TOKEN=app.config["TOKEN"]) as restarted:
        again = restarted.test_client()
        again.set_cookie(cookie[0], cookie[1])
        assert again.get("/api/runs").status_code == 401


def test_a_new_token_ends_every_session(app, anonymous):
    anonymous.post("/login", data={"token": app.config["TOKEN"]})
    assert anonymous.get("/api/runs").status_code == 200
    old = app.config["TOKEN"]
    app.config["TOKEN"] = "a-new-token-" + old
    try:
        assert anonymous.get("/api/runs").status_code == 401
    finally:
        app.config["TOKEN"] = old


def test_replacing_the_token_file_ends_the_old_token_and_its_sessions_at_once(app, anonymous):
    """No restart needed (the README: replacing the file ends every session)."""
    path, old = app.extensions["auth"]["token_path"], app.config["TOKEN"]
    anonymous.post("/login", data={"token": old})
    assert anonymous.get("/api/runs").status_code == 200
    bearer = {"Authorization": "Bearer " + old}
    try:
        with open(path, "w") as f:
            f.write("a-new-token-for-the-lab\n")
        assert anonymous.get("/api/runs").status_code == 401  # the session made with the old one
        assert app.test_client().get("/api/runs", headers=bearer).status_code == 401
        new = {"Authorization": "Bearer a-new-token-for-the-lab"}
        assert app.test_client().get("/api/runs", headers=new).status_code == 200
        os.remove(path)  # deleted: a new token at once, as at a restart
        assert app.test_client().get("/api/runs", headers=new).status_code == 401
        assert app.config["TOKEN"] not in (old, "a-new-token-for-the-lab")
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    finally:
        with open(path, "w") as f:
            f.write(old + "\n")
    assert app.test_client().get("/api/runs", headers=bearer).status_code == 200


@pytest.mark.parametrize("headers", [{"Origin": "http://evil.example"},
                                     {"Origin": "http://localhost:5001"},  # same site, other port
                                     {"Origin": "null"},
                                     {"Referer": "http://evil.example/page"}])
def test_a_state_change_from_another_origin_is_refused(app, anonymous, run_id, headers):
    anonymous.post("/login", data={"token": app.config["TOKEN"]})
    response = anonymous.post("/api/runs/{}/cancel".format(run_id), headers=headers)
    assert response.status_code == 403 and "another site" in response.json["error"]
    with app.app_context():
        assert db.session.get(Run, run_id).status == "running"  # nothing changed


def test_a_state_change_from_the_dashboards_own_pages_passes(app, anonymous):
    anonymous.post("/login", data={"token": app.config["TOKEN"]})
    response = anonymous.post("/api/devices", json={"name": "x"}, headers={"Origin": "http://localhost"})
    assert response.status_code == 400  # past the guard: the body's own validation answers


@pytest.mark.parametrize("host", ["evil.example", "evil.example:5000", "localhost.evil.example", ""])
def test_an_unknown_host_name_is_refused_even_with_the_token(app, client, host):
    response = client.get("/api/runs", headers={"Host": host})
    assert response.status_code == 403 and "--allowed-hosts" in response.json["error"]
    assert client.get("/", headers={"Host": host}).status_code == 403


@pytest.mark.parametrize("host", ["localhost:5000", "127.0.0.1:5000", "[::1]:5000", "10.1.2.3",
                                  "nas.lab.example:5000", "NAS.lab.example"])
def test_addresses_and_allowed_names_are_served(client, host):
    assert client.get("/api/runs", headers={"Host": host}).status_code == 200


def test_socketio_needs_the_token_and_a_known_host(app):
    token = app.config["TOKEN"]
    assert not socketio.test_client(app).is_connected()
    assert not socketio.test_client(app, auth={"token": "wrong"}).is_connected()
    assert not socketio.test_client(app, auth={"token": token},
                                    headers={"Host": "evil.example"}).is_connected()
    for client in (socketio.test_client(app, auth={"token": token}),
                   socketio.test_client(app, headers={"Authorization": "Bearer " + token})):
        assert client.is_connected()
        client.disconnect()


def test_socketio_accepts_a_logged_in_browser(app):
    browser = app.test_client()
    browser.post("/login", data={"token": app.config["TOKEN"]})
    sio = socketio.test_client(app, flask_test_client=browser)
    assert sio.is_connected()
    sio.disconnect()


def test_without_auth_the_origin_and_host_checks_stay(tmp_path):
    with dashboard_app(tmp_path, LOCAL_AGENT=False, AUTH=False) as app:
        client = app.test_client()
        assert client.get("/api/runs").status_code == 200
        assert client.post("/api/runs/1/cancel", headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.get("/api/runs", headers={"Host": "evil.example"}).status_code == 403
        assert socketio.test_client(app).is_connected()


@pytest.mark.process
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::"])
def test_the_server_refuses_to_run_without_auth_beyond_loopback(host):
    result = subprocess.run([sys.executable, "-m", "webapp", "--no-auth", "--host", host],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--no-auth is refused" in result.stderr
