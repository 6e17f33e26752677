"""Fixtures shared by the test modules. A module sets DASHBOARD_CONFIG (overrides of the dashboard's
test configuration) or AGENT_TIMEOUT (its agent's idle timeout) to change what it gets."""
import pytest

import processes


@pytest.fixture(scope="module")
def app(request, tmp_path_factory):
    """The dashboard's Flask app on a data directory of its own, shut down after the module."""
    config = getattr(request.module, "DASHBOARD_CONFIG", {})
    with processes.dashboard_app(tmp_path_factory.mktemp("dashboard"), **config) as app:
        yield app


@pytest.fixture(scope="module")
def client(app):
    """A test client that sends the token the way programs do (``Authorization: Bearer``)."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = "Bearer " + app.config["TOKEN"]
    return client


@pytest.fixture(scope="module")
def agent(request, tmp_path_factory):
    """A real nano_agent process on loopback."""
    timeout = getattr(request.module, "AGENT_TIMEOUT", processes.AGENT_TIMEOUT)
    a = processes.Agent(tmp_path_factory.mktemp("agent"), timeout=timeout)
    yield a
    a.stop()
