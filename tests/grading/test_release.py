"""`make release`: the students' repository holds the book, labs/ and gpt_lab, and nothing that gives answers
away (solutions, hidden checks, the grader); installing it gives a gpt_lab with no grading code, and a lab's
visible tests run there with `gpt-lab check`."""
import json
import os
import re
import subprocess
import sys

import pytest
from grader import LABS, REPO, release, solution

from gpt_lab_grader.release import check_release, write_release

LAB = "lab02-masking"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("release") / "students", REPO)


def test_release_holds_the_course_and_no_instructor_material(released):
    assert {p.name for p in released.iterdir()} >= {"README.md", "book", "labs", "gpt_lab", "pyproject.toml"}
    for name in ("solutions", "tests", "gpt_lab_grader", "benchmarks", "nbgrader_config.py", "Makefile"):
        assert not (released / name).exists(), name
    assert check_release(released) == []
    for lab in LABS:
        copy = released / "labs" / lab / f"{lab}.ipynb"
        assert copy.read_bytes() == release(lab).read_bytes()
    hidden_check_names = {m for p in REPO.glob("gpt_lab_grader/labs/*/checks.py")
                          for m in re.findall(r"^def (test_\w+)", p.read_text(), re.M)}
    assert len(hidden_check_names) > 40
    texts = "\n".join(p.read_text(errors="replace") for p in released.rglob("*") if p.is_file()
                      and p.suffix in (".py", ".ipynb", ".toml"))
    assert not [name for name in hidden_check_names if f"def {name}(" in texts]
    assert "gpt-lab check" in (released / "README.md").read_text()
    assert "gpt-lab-grade" not in (released / "pyproject.toml").read_text()


def test_release_refuses_a_folder_in_use(tmp_path):
    (tmp_path / "x.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_release(tmp_path, REPO)


def _install(released, target):
    """gpt_lab built and installed from the release (a real, non-editable install), without dependencies."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-cache-dir", "--target", str(target), str(released)], check=True, capture_output=True,
                   env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))
    return target


def test_installed_release_has_no_grading_code(released, tmp_path):
    site = _install(released, tmp_path / "site")
    names = {p.name for p in site.iterdir()}
    assert "gpt_lab" in names and "gpt_lab_grader" not in names
    files = [p for p in (site / "gpt_lab").rglob("*.py")]
    assert files and not [p for p in files if "grad" in p.name and "gradient" not in p.name]
    assert not [p for p in files if "gpt_lab_grader" in p.read_text()]
    scripts = [p.name for p in (site / "bin").iterdir()] if (site / "bin").exists() else []
    assert "gpt-lab-grade" not in scripts


def test_visible_tests_run_in_the_release(released, tmp_path):
    """The released lab with the solution's answers filled in passes `gpt-lab check` there, with gpt_lab
    imported from the release; the untouched stub fails it (exit status 1, NotImplementedError named)."""
    site = _install(released, tmp_path / "site")
    lab_dir = released / "labs" / LAB
    answers = {c["metadata"]["nbgrader"]["grade_id"]: c["source"] for c in json.loads(solution(LAB).read_text())["cells"]
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    nb = json.loads((lab_dir / f"{LAB}.ipynb").read_text())
    for cell in nb["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            source = "".join(answers[grade_id])
            cell["source"] = re.sub(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*(\n|$)", "", source, flags=re.M)
    filled = lab_dir / "filled.ipynb"
    filled.write_text(json.dumps(nb))
    env = dict(os.environ, PYTHONPATH=str(site), GPT_LAB_FAST="1", GPT_LAB_PROGRESS="0")
    probe = subprocess.run([sys.executable, "-c", "import gpt_lab; print(gpt_lab.__file__)"], env=env,
                           capture_output=True, text=True, cwd=lab_dir)
    assert probe.stdout.startswith(str(site))
    cmd = [sys.executable, "-m", "gpt_lab.cli", "check"]
    ok = subprocess.run([*cmd, str(filled)], env=env, capture_output=True, text=True, cwd=lab_dir, timeout=900)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-2000:]
    assert "FAIL" not in ok.stdout and re.search(r"(\d+) of \1 visible tests passed", ok.stdout)
    stub = subprocess.run([*cmd, str(lab_dir / f"{LAB}.ipynb")], env=env, capture_output=True, text=True,
                          cwd=lab_dir, timeout=900)
    assert stub.returncode == 1 and "FAIL" in stub.stdout and "NotImplementedError" in stub.stdout
