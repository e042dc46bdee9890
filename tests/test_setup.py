"""What a new user installs and reads: declared dependencies, license, citation, wording."""

import re
import tomllib

import yaml

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_torchattacks_is_declared_and_installed_the_same_way_everywhere():
    extra = PYPROJECT["project"]["optional-dependencies"]["crosscheck"]
    assert extra == ["torchattacks==3.5.1"]
    pin = extra[0]
    lock = (REPO / "requirements-crosscheck.lock").read_text()
    assert f"{pin} \\\n    --hash=sha256:" in lock
    assert pin not in (REPO / "requirements.lock").read_text()  # its requests pin would break DVC
    make = (REPO / "Makefile").read_text()
    assert "--no-deps -r requirements-crosscheck.lock" in make and f'echo "{pin}"' in make
    env = (REPO / "environment.yml").read_text()
    assert "--no-deps -r requirements-crosscheck.lock" in env  # the conda file's note says how, and why
    readme = (REPO / "README.md").read_text()
    assert f"--no-deps\n{pin}" in readme or f"--no-deps {pin}" in readme


def test_reference_autoattack_is_a_declared_dependency_everywhere():
    """The AutoAttack columns run pyautoattack: a plain install (pip, conda, a job's conda env)
    must bring it, not only `make venv`."""
    pin = "pyautoattack==0.2.0"
    assert pin in PYPROJECT["project"]["dependencies"]
    assert f"\n{pin} \\\n" in (REPO / "requirements.lock").read_text()  # environment.yml installs it
    env = yaml.safe_load((REPO / "workflow" / "envs" / "lsqueeze.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pin in pip
    assert not any(d.startswith("torchattacks") for d in pip)
    assert "--no-deps pyautoattack" not in (REPO / "Makefile").read_text()


def test_python_range_is_open_above_and_the_tested_version_is_inside():
    spec = PYPROJECT["project"]["requires-python"]
    assert spec == ">=3.11"
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    tested = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert tested == "python=3.11"


def test_license_and_citation():
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == PYPROJECT["project"]["version"]
    paper = cff["preferred-citation"]
    assert paper["title"].startswith("Label Smoothing and Logit Squeezing")
    assert [a["family-names"] for a in paper["authors"]][0] == "Shafahi" and paper["year"] == 2019


# Notes about how the project was built, which mean nothing to a user.
INTERNAL = re.compile(r"issue #\d|\bsession\b|\blent\b|DESIGN\.md|workplace|run\(command=|"
                      r"device tool|give_back", re.I)


def test_user_facing_text_has_no_internal_notes():
    files = [REPO / "README.md", REPO / "BENCHMARKS.md", REPO / "Makefile",
             REPO / "environment.yml", REPO / "pyproject.toml", *(REPO / "params").glob("*.yaml"),
             *(REPO / "bench").glob("*.py"), *(REPO / "bench").glob("*.sh"),
             *(REPO / "workflow" / "report").glob("*.rst"), *(REPO / "bench").glob("runs/*/README.md"),
             *(REPO / "reproduced").glob("*/README.md")]
    if (REPO / "FIDELITY.md").exists():
        files.append(REPO / "FIDELITY.md")
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in files
            for i, line in enumerate(p.read_text().splitlines(), 1) if INTERNAL.search(line)]
    assert not hits, "\n".join(hits)


def test_error_messages_have_no_internal_notes():
    """String literals in the package (error messages, help, output) speak to a user too."""
    import ast

    hits = []
    for path in sorted((REPO / "src" / "lsqueeze").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and INTERNAL.search(node.value):
                hits.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:80]!r}")
    assert not hits, "\n".join(hits)


def test_mnist_cpu_downloads_from_the_official_mirror_by_default():
    cfg = yaml.safe_load((REPO / "params" / "mnist_cpu.yaml").read_text())
    assert "mirrors" not in cfg  # a local copy is an option its header documents
    assert "127.0.0.1" in (REPO / "params" / "mnist_cpu.yaml").read_text()
