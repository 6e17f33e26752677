"""Checking a run's ranking from the dashboard: architectures spread across a tiny run's samples
retrained by real `train` workers through the queue; Kendall's tau, the pick's place and the cost
computed from what they reached; the check as CSV."""
import csv
import io
import json

import pytest
from scipy.stats import kendalltau

from helpers import TINY, run_reaches, training_reaches
from webapp.extensions import db
from webapp.models import Run

pytestmark = pytest.mark.process

DASHBOARD_CONFIG = {"MAX_RUNS": 1}

RUN = {}


@pytest.fixture(scope="module", autouse=True)
def finished(app, client):
    r = client.post("/api/runs", json=dict(TINY, name="to check", epochs=3, samples_per_epoch=3))
    assert r.status_code == 201, r.get_json()
    RUN.update(run_reaches(client, r.get_json()["id"], ("finished", "failed")))
    assert RUN["status"] == "finished", RUN


def test_a_check_retrains_a_spread_of_the_samples_and_says_how_the_rankings_agree(client):
    samples = client.get("/api/runs/{}/samples".format(RUN["id"])).get_json()
    latest = {s["arch_hash"]: s["accuracy"] for s in sorted(samples, key=lambda s: s["id"])}
    assert len(latest) >= 3, latest
    r = client.post("/api/runs/{}/ranking_checks".format(RUN["id"]),
                    json={"architectures": 3, "epochs": 1})
    assert r.status_code == 201, r.get_json()
    check = r.get_json()
    points = check["points"]
    assert len(points) == 3 and check["active"] and check["kendall_tau"] is None
    shared = sorted(p["shared_weight_accuracy"] for p in points)
    assert shared[0] == min(latest.values()) and shared[-1] == max(latest.values())  # both ends
    assert [p["pick"] for p in points].count(True) == 1  # the run's pick among them
    assert next(p for p in points if p["pick"])["arch_hash"] == RUN["best"]["arch_hash"]
    trained = [training_reaches(client, RUN["id"], p["training_id"]) for p in points]
    assert [t["status"] for t in trained] == ["finished"] * 3, trained
    assert all(t["ranking_check_id"] == check["id"] for t in trained)

    [done] = client.get("/api/runs/{}/ranking_checks".format(RUN["id"])).get_json()
    assert not done["active"] and done["retrained"] == 3
    pairs = [(p["shared_weight_accuracy"], p["test_accuracy"]) for p in done["points"]]
    tau, p_value = kendalltau(*zip(*pairs))
    if tau != tau:  # a flat ranking after one epoch: no agreement is claimed
        assert done["kendall_tau"] is None and done["p_value"] is None
    else:
        assert done["kendall_tau"] == pytest.approx(tau) and done["p_value"] == pytest.approx(p_value)
    pick = next(p for p in done["points"] if p["pick"])
    assert done["pick_rank"] == 1 + sum(p["test_accuracy"] > pick["test_accuracy"]
                                        for p in done["points"])
    assert done["train_time_s"] == pytest.approx(sum(t["train_time_s"] for t in trained))

    r = client.get("/api/ranking_checks/{}.csv".format(check["id"]))
    assert r.status_code == 200 and r.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(r.get_data(as_text=True))))
    assert [(float(row["shared_weight_accuracy"]), float(row["test_accuracy"])) for row in rows] == \
        pairs


@pytest.mark.parametrize("body, field", [({"architectures": 2}, "architectures"),
                                         ({"architectures": 31}, "architectures"),
                                         ({"architectures": True}, "architectures"),
                                         ({"epochs": 0}, "epochs"), ({"seed": -1}, "seed"),
                                         ({"k": 3}, "k")])
def test_bad_checks_are_refused_per_field(client, body, field):
    r = client.post("/api/runs/{}/ranking_checks".format(RUN["id"]), json=body)
    assert r.status_code == 400 and field in r.get_json()["errors"], r.get_json()


def test_only_a_finished_run_is_checked(app, client):
    with app.app_context():
        run = Run(name="unfinished", status="failed", config=json.dumps(dict(TINY)))
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    r = client.post("/api/runs/{}/ranking_checks".format(run_id), json={})
    assert r.status_code == 409 and "finished run" in r.get_json()["error"]
    assert client.get("/api/ranking_checks/999999.csv").status_code == 404
