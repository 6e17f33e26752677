"""What a hostile probe found beyond the token checks (test_webapp_auth.py): a second dashboard on
one data directory took over the first's workers and agent; the database, which holds every
device's token, was readable by every local user; a group of 100,000 device ids cost a query
each."""
import os
import stat
import subprocess
import sys

import pytest
import sqlalchemy as sa

from processes import ROOT, Dashboard, dashboard_app, free_port
from webapp.extensions import db
from webapp.models import Device

pytestmark = pytest.mark.process


def test_a_second_dashboard_on_one_data_directory_refuses_to_start(tmp_path):
    first = Dashboard(tmp_path)
    try:
        second = subprocess.run([sys.executable, "-m", "webapp", "--data-dir", str(tmp_path),
                                 "--port", str(free_port())], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        assert second.returncode != 0
        assert "another dashboard (pid {})".format(first.proc.pid) in second.stderr, second.stderr
        devices = first.http.get(first.url + "/api/devices", timeout=5).json()
        assert devices[0]["status"] == "online"  # the first one's local agent was left alone
    finally:
        first.stop()
    restarted = Dashboard(tmp_path)  # the lock went with the process
    restarted.stop()


def test_the_database_is_readable_by_its_owner_alone(tmp_path):
    path = tmp_path / "dashboard.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)  # made by an earlier version, under a permissive umask
    with dashboard_app(tmp_path, LOCAL_AGENT=False) as app:
        with app.app_context():
            db.session.add(Device(name="nano", kind="agent", host="10.0.0.9", port=8765,
                                  token="the-nano's-secret"))
            db.session.commit()
            assert db.session.scalar(sa.select(sa.func.count(Device.id))) >= 1
        files = [p for p in (path, tmp_path / "dashboard.db-wal", tmp_path / "dashboard.db-shm")
                 if p.exists()]
        assert len(files) == 3  # WAL mode: the log and its index too
        assert all(stat.S_IMODE(os.stat(p).st_mode) == 0o600 for p in files), \
            [(p.name, oct(os.stat(p).st_mode)) for p in files]


def test_a_group_of_a_hundred_thousand_ids_is_refused_at_once(tmp_path):
    """It ran one query per id (37 s) before saying the ids were unknown."""
    with dashboard_app(tmp_path, LOCAL_AGENT=False) as app:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + app.config["TOKEN"]
        queries = []
        sa.event.listen(_engine(app), "before_cursor_execute",
                        lambda *args: queries.append(args[2]))
        r = client.post("/api/groups", json={"name": "huge", "device_ids": list(range(1, 100_001))})
        assert r.status_code == 400 and "at most 256" in r.get_json()["errors"]["device_ids"]
        assert not any("devices" in q for q in queries)  # refused before any lookup
        queries.clear()
        r = client.post("/api/groups", json={"name": "two", "device_ids": [41, 42]})
        assert r.status_code == 400 and "no device 41" in r.get_json()["errors"]["device_ids"]
        assert sum("FROM devices" in q for q in queries) == 1  # one query for every id


def _engine(app):
    with app.app_context():
        return db.engine


def test_look_alike_names_and_hosts_that_cannot_resolve_are_refused(tmp_path):
    """'local' with a zero-width space, in full-width letters or behind a right-to-left override
    was accepted beside 'local'; a host of 100 CJK characters (over DNS's 63-octet label) was
    registered and stayed offline forever."""
    with dashboard_app(tmp_path, LOCAL_AGENT=False) as app:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + app.config["TOKEN"]

        def register(name, host="10.0.0.9"):
            return client.post("/api/devices", json={"name": name, "host": host, "token": "t"})

        assert register("nano").status_code == 201
        for look_alike, says in (("nano\u200b", "invisible"), ("\u202eonan", "direction"),
                                 ("ｎａｎｏ", "exists"), ("  nano ", "exists")):
            r = register(look_alike)
            assert r.status_code == 400 and says in r.get_json()["errors"]["name"], look_alike
        r = register("wide one", "漢" * 100)
        assert r.status_code == 400 and "63" in r.get_json()["errors"]["host"]
        for bad in ("-nano", "a..b", "nano one", "x" * 254):
            assert "host" in register("bad " + bad[:8], bad).get_json()["errors"], bad
        for good in ("jetson-02.lab", "jetson_03", "fe80::1", "例え.テスト"):
            assert register("good " + good, good).status_code == 201, good
        # names are stored in their NFKC form: a full-width name is its plain one
        assert register("ｊｅｔｓｏｎ").get_json()["name"] == "jetson"
        r = client.post("/api/runs", json={"name": "run\u2066x", "dataset": "digits"})
        assert r.status_code == 400 and "invisible" in r.get_json()["errors"]["name"]
