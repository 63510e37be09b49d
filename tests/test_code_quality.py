"""Linters as tests, and the promise that the package runs on the Pythons ROS 2 uses."""

import ast
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SOURCES = sorted(p for d in ("hmdiff_ros", "tests", "launch") for p in (ROOT / d).rglob("*.py")) + [ROOT / "setup.py"]


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install 'hmdiff_ros[test]')")
    result = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_owns_the_layout():
    """Formatting is the formatter's (config in ruff.toml), not hand-kept: no file differs from
    ``ruff format``, and no statement opts out of it."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install 'hmdiff_ros[test]')")
    result = subprocess.run([ruff, "format", "--check", "--diff", str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr
    skips = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in SOURCES
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if "fmt: " + "skip" in line or "fmt: " + "off" in line
    ]
    assert not skips, f"formatter opt-outs: {skips}"


def test_every_test_module_on_the_ros_core_is_marked_ros():
    """.ci/run runs ``-m ros`` on each further ROS 2 distribution: a module that uses the core
    (rclpy, launch_testing, the built hmdiff_msgs, tests/ros_helpers.py) without the mark would
    run on the first distribution only. test_node_logic.py is the one exception: it runs where
    rclpy is absent, on tests/ros_standin.py."""
    uses_core = re.compile(r'find_spec\("(rclpy|launch_testing|hmdiff_msgs)"\)|^from ros_helpers import', re.M)
    unmarked = [
        p.name
        for p in sorted((ROOT / "tests").glob("test_*.py"))
        if p.name != "test_node_logic.py"
        and uses_core.search(p.read_text())
        and not re.search(r"^pytestmark = (\[\s*)?pytest\.mark\.ros\b", p.read_text(), re.M)
    ]
    assert not unmarked, f"test modules using the ROS 2 core without pytestmark = pytest.mark.ros: {unmarked}"


def test_core_never_imports_ros():
    ros_modules = {"rclpy", "rclpy_lifecycle", "sensor_msgs", "visualization_msgs", "cv_bridge", "tf2_ros"}
    for path in (ROOT / "hmdiff_ros").rglob("*.py"):
        if "ros" in path.relative_to(ROOT / "hmdiff_ros").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not {n.split(".")[0] for n in names} & ros_modules, f"{path} imports ROS"


def _find_python(version):
    """A working interpreter of that version: on PATH, or under pyenv (whose shims may refuse)."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(pathlib.Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    for exe in filter(None, candidates):
        if subprocess.run([str(exe), "-c", "pass"], capture_output=True).returncode == 0:
            return str(exe)
    return None


@pytest.mark.parametrize("version", ["3.10", "3.12"])
def test_sources_compile_on_ros_pythons(version):
    """Humble runs Python 3.10, Jazzy 3.12: no syntax from newer or removed versions."""
    exe = _find_python(version)
    if exe is None:
        pytest.skip(f"no python{version} interpreter found")
    code = "import sys, ast; [ast.parse(open(p).read(), p) for p in sys.argv[1:]]"
    result = subprocess.run([exe, "-c", code, *map(str, SOURCES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_this_python_is_supported():
    assert sys.version_info >= (3, 10)
