"""The layout the design promises: the device side is one folder that runs alone on a Jetson's
Python 3.6, imports go one way only (nano_agent <- search_core <- webapp), and no module imports
another that imports it back."""
import ast
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("nano_agent", "search_core", "webapp")  # each may import only those before it
RANK = {name: i for i, name in enumerate(PACKAGES)}


def project_modules():
    """Every module of the three packages and their subpackages, by dotted name."""
    names = []
    for package in PACKAGES:
        for directory, subdirectories, filenames in sorted(os.walk(os.path.join(ROOT, package))):
            subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
            dotted = os.path.relpath(directory, ROOT).replace(os.sep, ".")
            names += [dotted if f == "__init__.py" else dotted + "." + f[:-3]
                      for f in sorted(filenames) if f.endswith(".py")]
    return names


def module_path(name):
    parts = name.split(".")
    path = os.path.join(ROOT, *parts)
    return os.path.join(path, "__init__.py") if os.path.isdir(path) else path + ".py"


def imports_of(name):
    """The project modules `name` imports anywhere in its source (functions included), resolved:
    `from . import x` names the module x when x is one, else the package."""
    modules = set(project_modules())
    package = name if module_path(name).endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(module_path(name)).read())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1]
                                + ([node.module] if node.module else []))
            targets = [base + "." + alias.name if base + "." + alias.name in modules else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def test_the_dashboards_modules_are_short_or_say_why():
    """A module of webapp/ over 400 lines says why at its top (a `# length:` line): the API is a
    package by resource, not one module of everything."""
    long = []
    for name in project_modules():
        if name.split(".")[0] == "webapp":
            with open(module_path(name)) as f:
                text = f.read()
            if text.count("\n") > 400 and not re.search("^# length: ", text[:3000], re.M):
                long.append(name)
    assert "webapp.api.runs" in project_modules() and not long, long


def test_the_pages_scripts_are_es_modules_without_a_global_object():
    """One module system in the browser: every script of ours is an ES module, loaded as one, and
    none publishes a global for the others (the shared helpers are common.js's exports)."""
    static = os.path.join(ROOT, "webapp", "static", "js")
    scripts = [os.path.join(d, f) for d, _, files in os.walk(static) for f in files if f.endswith(".js")]
    wrong = []
    for path in scripts:
        with open(path) as f:
            text = f.read()
        if re.search(r"^\(function \(\) \{|window\.NAS\s*=", text, re.M):
            wrong.append(os.path.relpath(path, ROOT))
    templates = os.path.join(ROOT, "webapp", "templates")
    for name in os.listdir(templates):
        with open(os.path.join(templates, name)) as f:
            for tag in re.findall(r"<script [^>]*js/[^>]*>", f.read()):
                if 'type="module"' not in tag:
                    wrong.append("{}: {}".format(name, tag))
    assert len(scripts) >= 10 and not wrong, wrong


def test_imports_go_one_way_in_the_source():
    wrong = ["{} imports {}".format(name, target) for name in project_modules()
             for target in imports_of(name)
             if RANK[target.split(".")[0]] > RANK[name.split(".")[0]]]
    assert not wrong


def test_no_module_imports_another_that_imports_it_back():
    graph = {name: imports_of(name) for name in project_modules()}
    cycles = []

    def visit(name, path):
        for target in graph[name]:
            if target in path:
                cycles.append(path[path.index(target):] + [target])
            elif target not in done:
                visit(target, path + [target])
        done.add(name)

    done = set()
    for name in graph:
        if name not in done:
            visit(name, [name])
    assert not cycles


IMPORT_EACH = """
import importlib, json, sys
packages, wrong = sys.argv[1].split(","), []
rank = {name: i for i, name in enumerate(packages)}
loaded = lambda: {m for m in sys.modules if m.split(".")[0] in packages}
for name in sys.argv[2:]:
    for module in loaded():
        del sys.modules[module]  # so that the import below loads what `name` needs afresh
    importlib.import_module(name)
    wrong += ["importing {} loads {}".format(name, m) for m in loaded()
              if rank[m.split(".")[0]] > rank[name.split(".")[0]]]
print(json.dumps(wrong))
"""


@pytest.mark.process
def test_imports_go_one_way_when_imported():
    """What importing each module really loads (in a fresh interpreter): a module of nano_agent
    loads nothing of the other two packages, one of search_core nothing of webapp."""
    names = [name for name in project_modules() if not name.endswith("__main__")]
    out = subprocess.run([sys.executable, "-c", IMPORT_EACH, ",".join(PACKAGES)] + names, cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


@pytest.mark.process
def test_the_web_process_does_not_import_torch(tmp_path):
    code = ("import sys; from webapp import create_app; "
            "create_app({'DATA_DIR': sys.argv[1], 'LOCAL_AGENT': False, "
            "'DEVICE_CHECK_INTERVAL_S': 0}); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_dashboard_imports_only_the_torch_free_half_of_search_core():
    from search_core import TORCH_FREE
    allowed = {"search_core"} | {"search_core." + name for name in TORCH_FREE}
    heavy = {name: sorted(m for m in imports_of(name) if m.startswith("search_core") and
                          m not in allowed)
             for name in project_modules() if name.split(".")[0] == "webapp"}
    assert not {name: modules for name, modules in heavy.items() if modules}


@pytest.mark.process
def test_the_torch_free_half_of_search_core_imports_no_torch():
    from search_core import TORCH_FREE
    code = ("import importlib, sys; [importlib.import_module('search_core.' + m) for m in "
            "sys.argv[1:]]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code] + list(TORCH_FREE), cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.process
def test_the_device_folder_is_python36_compatible():
    """vermin over the whole folder that is copied to the Jetson (JetPack 4.6: Python 3.6)."""
    vermin = os.path.join(os.path.dirname(sys.executable), "vermin")
    result = subprocess.run([vermin, "--no-tips", "--violations", "-t=3.6-", "--eval-annotations",
                             "nano_agent"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.process
def test_the_agent_loads_onnxruntime_only_when_a_measurement_asks_for_it():
    """onnxruntime is optional on the device and heavy there (onnxruntime-gpu loads CUDA and
    TensorRT): nano_agent.onnx_backend imports it on first use, by name."""
    code = ("import sys; from nano_agent import server; from nano_agent.measure import "
            "measure_architecture; from nano_agent.space import SearchSpace; "
            "arch = SearchSpace(0.5, 32, 10, 1).mobilenet_v2(); "
            "measure_architecture(arch, None, 0, 1); before = 'onnxruntime' in sys.modules; "
            "measure_architecture(arch, None, 0, 1, backend='onnxruntime'); "
            "print(before, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.split() == ["False", "True"]


def test_the_device_folder_imports_only_the_standard_library_and_torch():
    allowed = set(sys.stdlib_module_names) | {"torch", "nano_agent"}
    outside = []
    for name in project_modules():
        if not name.startswith("nano_agent"):
            continue
        for node in ast.walk(ast.parse(open(module_path(name)).read())):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                tops = [node.module.split(".")[0]]
            else:
                continue
            outside += ["{} imports {}".format(name, top) for top in tops if top not in allowed]
    assert not outside


@pytest.mark.process
@pytest.mark.timeout(120)
def test_the_device_folder_runs_alone(tmp_path):
    """Copied on its own, as docs/agent.md installs it: the agent starts and measures."""
    shutil.copytree(os.path.join(ROOT, "nano_agent"), str(tmp_path / "nano_agent"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    code = ("import json, os, sys\n"
            "sys.path = [p for p in sys.path if os.path.abspath(p or '.') != sys.argv[1]]\n"
            "from nano_agent.server import Agent\n"
            "from nano_agent.space import SearchSpace\n"
            "arch = SearchSpace(0.5, 16, 10, 1).mobilenet_v2()\n"
            "result = Agent('t').measure({'arch': arch.to_dict(), 'warmup': 1, 'runs': 2})\n"
            "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))\n")
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    out = subprocess.run([sys.executable, "-c", code, ROOT], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    loaded = set(json.loads(out.stdout))
    assert "nano_agent" in loaded and not loaded & {"search_core", "webapp"}
