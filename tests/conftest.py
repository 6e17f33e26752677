"""Fixtures shared by the test modules. A module sets DASHBOARD_CONFIG (overrides of the dashboard's
test configuration), AGENT_TIMEOUT (its agent's idle timeout) or DATABASES (the databases its
dashboard app runs on, each test once per database: "sqlite", the default, and "postgresql") to
change what it gets."""
import pytest

import processes


def pytest_generate_tests(metafunc):
    if "database" in metafunc.fixturenames:
        databases = getattr(metafunc.module, "DATABASES", ("sqlite",))
        metafunc.parametrize("database", databases, indirect=True, scope="module")


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the whole session, started on first use."""
    server = processes.PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def database(request):
    """The database kind the module's app runs on (see DATABASES)."""
    return request.param


@pytest.fixture(scope="module")
def database_url(request, database):
    """None for SQLite (the data directory's file), else a new empty PostgreSQL database."""
    if database == "sqlite":
        return None
    return request.getfixturevalue("postgres").database()


@pytest.fixture(scope="module")
def app(request, tmp_path_factory, database_url):
    """The dashboard's Flask app on a data directory of its own, shut down after the module."""
    config = dict(getattr(request.module, "DASHBOARD_CONFIG", {}))
    if database_url:
        config["SQLALCHEMY_DATABASE_URI"] = database_url
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
