"""The package's layers and its import graph, checked by import-linter against setup.cfg.

The contracts: each layer imports only from the layers below it (cli > info > ros, study >
pipeline > prior, runtime > model > data > observation, render > body, camera > defaults,
errors, files, quiet); no runtime module imports the study tools (hmdiff_ros.study), even
through others; and no two modules of a package import each other, even through others. A
copy of the sources with one upward import, one import of the study tools, or one cycle, must
break them: the contracts are not vacuous.
"""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hmdiff_ros"

pytest.importorskip("importlinter", reason="import-linter is not installed (pip install 'hmdiff_ros[test]')")


def lint_imports(source_root: Path) -> subprocess.CompletedProcess:
    """import-linter on the ``hmdiff_ros`` found in ``source_root``, with the repository's contracts."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename=sys.argv[2], no_cache=True))"
    )
    return subprocess.run(
        [sys.executable, "-c", code, str(source_root), str(ROOT / "setup.cfg")],
        capture_output=True,
        text=True,
        cwd=source_root,
    )


def copy_sources(dst: Path) -> Path:
    """The package's Python files only (enough for the import graph)."""
    for path in PACKAGE.rglob("*.py"):
        target = dst / "hmdiff_ros" / path.relative_to(PACKAGE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return dst


def test_the_layers_study_and_acyclic_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout, result.stdout


def lint_with_import(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess:
    """import-linter on a copy of the sources whose ``module`` (a path in the package) ends with ``line``."""
    root = copy_sources(tmp_path)
    path = root / "hmdiff_ros" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    return result


def test_an_upward_import_breaks_the_layers(tmp_path):
    out = lint_with_import(tmp_path, "camera.py", "from hmdiff_ros.pipeline import run").stdout
    assert "Layers" in out and "BROKEN" in out, out
    assert "hmdiff_ros.camera -> hmdiff_ros.pipeline.run" in out, out


def test_the_runtime_importing_the_study_tools_breaks_the_study_contract(tmp_path):
    # the frame pipeline scoring itself with the real-data evaluation: a study tool at run time
    out = lint_with_import(tmp_path, "pipeline/pipeline.py", "import hmdiff_ros.study.eval_real").stdout
    assert "The runtime never imports the study tools BROKEN" in out, out
    report = out.split("The runtime never imports the study tools\n---", 1)[1]
    assert "hmdiff_ros.pipeline.pipeline -> hmdiff_ros.study.eval_real" in report, report
    # the node reaches it through the pipeline: followed to the end, not only the direct import
    assert "hmdiff_ros.ros is not allowed to import hmdiff_ros.study" in report, report


def test_an_import_cycle_breaks_the_acyclic_contract(tmp_path):
    # outputs.py is imported by run.py; run.py back from outputs.py closes a cycle in one layer
    out = lint_with_import(tmp_path, "pipeline/outputs.py", "import hmdiff_ros.pipeline.run").stdout
    assert "No cycles are allowed in hmdiff_ros.pipeline" in out, out


def _private_imports(path: Path):
    """``from hmdiff_ros.x import _name`` in ``path``: a private name taken from another module."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("hmdiff_ros"):
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    yield f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {node.module}"


def test_no_module_imports_a_private_name_from_another():
    sources = sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tests").glob("*.py"))
    found = [hit for path in sources for hit in _private_imports(path)]
    assert not found, "\n".join(found)
