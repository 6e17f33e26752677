"""The kinds of test (tests/conftest.py), on a suite of their own run by pytest in a child process:
a test without a kind stops the collection, `-m` sees one kind per test (a test's own marker
overrides its module's), and a unit test that starts a process fails, from a background thread
too, while a process test may."""
import os
import shutil

import pytest

pytestmark = pytest.mark.process

HERE = os.path.dirname(os.path.abspath(__file__))

SUITE = '''
import subprocess
import sys
import threading

import pytest

pytestmark = pytest.mark.unit


def test_in_process():
    assert sum([1, 2]) == 3


def test_starts_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_starts_a_process_from_a_thread():
    thread = threading.Thread(target=lambda: subprocess.run([sys.executable, "-c", "pass"]))
    thread.start()
    thread.join()


@pytest.mark.process
def test_may_start_a_process():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
'''


@pytest.fixture
def suite(pytester):
    for name in ("conftest.py", "processes.py", "helpers.py", "browser.py"):
        shutil.copy(os.path.join(HERE, name), str(pytester.path))
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_a_unit_test_that_starts_a_process_fails(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=1, errors=1)  # the thread's test: its teardown fails
    result.stdout.fnmatch_lines(["*RuntimeError: a unit test may not start a process*"])
    result.stdout.fnmatch_lines(["*Failed: a unit test started a process*"])
    result.stdout.fnmatch_lines(["FAILED test_suite.py::test_starts_a_process - *",
                                 "ERROR test_suite.py::test_starts_a_process_from_a_thread - *"])


def test_each_test_has_exactly_one_kind_for_m(suite):
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-m", "unit", "--co", "-q")
    result.stdout.fnmatch_lines(["3/4 tests collected (1 deselected)*"])
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "-m", "process", "--co", "-q")
    result.stdout.fnmatch_lines(["*test_may_start_a_process", "1/4 tests collected*"])


def test_a_test_without_a_kind_stops_the_collection(suite):
    suite.makepyfile(test_unmarked="def test_anything():\n    pass\n")
    result = suite.runpytest_subprocess("-p", "no:cacheprovider", "--co")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*tests without a kind*test_unmarked.py::test_anything*"])
