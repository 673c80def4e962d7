"""Setup files agree with each other: environment.yml mirrors pyproject.toml's pins."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_environment_yml_mirrors_pyproject_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip_section) == pins
    assert all(re.fullmatch(r"[A-Za-z0-9_.\-]+==[0-9][0-9A-Za-z.]*", p) for p in pins), "pins must be exact"


def test_corpus_pin_is_the_same_everywhere():
    makefile = (ROOT / "Makefile").read_text()
    corpus = re.search(r"CORPUS\s*:=\s*(\S+)", makefile).group(1)
    assert f"pip install --no-deps {corpus}" in (ROOT / "environment.yml").read_text()
    assert corpus in (ROOT / "README.md").read_text()


def test_license_is_an_spdx_expression_which_setuptools_takes_without_a_deprecation_warning():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "MIT"  # the old {text = ...} table is deprecated (PEP 639)
    floor = re.fullmatch(r"setuptools>=(\d+)", pyproject["build-system"]["requires"][0])
    assert floor and int(floor.group(1)) >= 77  # the first setuptools that reads SPDX license strings


def test_make_lab_works_as_root():
    # JupyterLab refuses to start as root without --allow-root, and containers run as root.
    lab = re.search(r"^lab:.*\n\t(.*)", (ROOT / "Makefile").read_text(), re.M).group(1)
    assert "--allow-root" in lab and "id -u" in lab
