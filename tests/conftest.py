"""Fixtures shared by the test modules, and the kinds of test. A module sets DASHBOARD_CONFIG
(overrides of the dashboard's test configuration), AGENT_TIMEOUT and AGENT_ARGS (its agent's idle
timeout and further options) or DATABASES (the databases its dashboard app runs on, each test once
per database: "sqlite", the default, and "postgresql"; a test's `@pytest.mark.databases("sqlite")`
narrows it) to change what it gets.

Every test is of one kind (its closest marker: a module's `pytestmark`, overridden by a test's own):
- unit: in this process and quick; `pytest -m unit` is the everyday run (under a minute). A unit
  test that starts a process fails, whatever it asserts;
- process: real processes (the agent, the CLI, the dashboard server, PostgreSQL, Ray) or real
  work in this one (training, searching, profiling a space): seconds to minutes each;
- system: the product as its users meet it, in a real browser, or a whole bench end to end.
"""
import functools
import multiprocessing.process
import platform
import subprocess
import threading

import pytest

import processes

pytest_plugins = ("browser", "pytester")  # the browser tests' fixtures; test_kinds.py's
KINDS = ("unit", "process", "system")


def pytest_configure(config):
    for kind in KINDS:
        config.addinivalue_line("markers", kind + ": a test of this kind (tests/conftest.py)")
    config.addinivalue_line("markers", "databases(*names): the databases a test runs on")
    platform.platform()  # the standard library's one probe by a child process (`uname -p`), cached
    subprocess.Popen.__init__ = _refused_in_unit_tests(subprocess.Popen.__init__)
    multiprocessing.process.BaseProcess.start = _refused_in_unit_tests(
        multiprocessing.process.BaseProcess.start)


def pytest_generate_tests(metafunc):
    if "database" in metafunc.fixturenames:
        # a test's own `databases` marker narrows its module's DATABASES (what does not depend on
        # the database runs once)
        marker = metafunc.definition.get_closest_marker("databases")
        databases = marker.args if marker else getattr(metafunc.module, "DATABASES", ("sqlite",))
        # a PostgreSQL server is a process of its own
        params = [pytest.param(d, marks=pytest.mark.process) if d == "postgresql" else d
                  for d in databases]
        metafunc.parametrize("database", params, indirect=True, scope="module")


def kind_of(item):
    return next((m.name for m in item.iter_markers() if m.name in KINDS), None)


@pytest.hookimpl(tryfirst=True)  # before `-m` selects
def pytest_collection_modifyitems(config, items):
    kinds = {item: kind_of(item) for item in items}
    unmarked = [item.nodeid for item, kind in kinds.items() if kind is None]
    if unmarked:
        raise pytest.UsageError("tests without a kind ({}; tests/conftest.py): {}".format(
            ", ".join(KINDS), ", ".join(unmarked)))
    # `-m` sees every marker up the chain: the module's kind moves down to the tests that keep it
    for item, kind in kinds.items():
        for node in item.listchain()[:-1]:
            node.own_markers[:] = [m for m in node.own_markers if m.name not in KINDS]
        item.own_markers[:] = [m for m in item.own_markers if m.name not in KINDS]
        item.add_marker(kind)


# The kind of the test being set up, run or torn down, and the processes a unit test tried to start
# from a background thread (where the refusal's exception would not fail the test).
_running = {"kind": None, "refused": []}


def _refused_in_unit_tests(start):
    @functools.wraps(start)
    def guarded(*args, **kwargs):
        if _running["kind"] == "unit":
            what = args[1] if start.__name__ == "__init__" and len(args) > 1 else args[0]
            if threading.current_thread() is not threading.main_thread():
                _running["refused"].append(repr(what)[:200])
            raise RuntimeError("a unit test may not start a process (mark it `process`): "
                               + repr(what)[:200])
        return start(*args, **kwargs)
    return guarded


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _running.update(kind=kind_of(item), refused=[])
    yield
    _running["kind"] = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    """A test's teardown also ends the wider fixtures no later test uses (the session's PostgreSQL
    server after the last test): whatever they stop is not the test's doing."""
    _running["kind"] = None
    yield


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process():
    yield
    if _running["refused"]:
        pytest.fail("a unit test started a process (mark it `process`): "
                    + "; ".join(_running["refused"]))


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
    """A real nano_agent process on loopback (its module's AGENT_TIMEOUT and AGENT_ARGS)."""
    timeout = getattr(request.module, "AGENT_TIMEOUT", processes.AGENT_TIMEOUT)
    a = processes.Agent(tmp_path_factory.mktemp("agent"), timeout=timeout,
                        args=getattr(request.module, "AGENT_ARGS", ()))
    yield a
    a.stop()
