"""The import rules of issue 12 item 4, checked by import-linter (contracts in ``.importlinter``)."""
from __future__ import annotations

import configparser
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import smart

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> dict[str, configparser.SectionProxy]:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return {name.split(":", 2)[2]: parser[name] for name in parser.sections() if name.startswith("importlinter:contract:")}


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_every_contract_is_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    for contract in _contracts().values():
        assert f"{contract['name']} KEPT" in result.stdout
    assert "0 broken" in result.stdout


def test_fhir_facade_may_import_every_smart_module_but_api():
    """The forbidden list names every module of smart but smart.api: a new smart module is
    forbidden to the facade until the contract is changed on purpose."""
    contract = _contracts()["fhir-facade-imports-only-smart-api"]
    forbidden = set(contract["forbidden_modules"].split())
    children = {f"smart.{m.name}" for m in pkgutil.iter_modules(smart.__path__)}
    assert forbidden == children - {"smart.api"}


@pytest.mark.parametrize("module, line, contract, chain", [
    ("smart/scopes.py", "import fhir_facade", "smart-never-imports-fhir-facade", "smart.scopes -> fhir_facade"),
    ("fhir_facade/fhir/api.py", "from smart import authz", "fhir-facade-imports-only-smart-api",
     "fhir_facade.fhir.api -> smart.authz"),
    ("fhir_facade/pacs/client.py", "from fhir_facade.resources import mapping", "pacs-client-knows-no-fhir-or-tokens",
     "fhir_facade.pacs.client -> fhir_facade.resources.mapping"),
    ("fhir_facade/dicomweb/api.py", "from fhir_facade.fhir import search_params",
     "fhir-api-and-dicomweb-proxy-independent", "fhir_facade.dicomweb.api -> fhir_facade.fhir.search_params"),
    ("fhir_facade/pacs/studies.py", "from fhir_facade.fhir import outcomes", "fhir-facade-layers",
     "fhir_facade.pacs.studies -> fhir_facade.fhir.outcomes"),
    ("fhir_facade/dicom/charsets.py", "import flask", "dicom-and-resources-are-pure",
     "fhir_facade.dicom.charsets -> flask"),
    ("smart/store/db.py", "from smart.tokens import keys", "smart-layers", "smart.store.db -> smart.tokens.keys"),
    ("smart/oauth/urls.py", "from smart.oauth import discovery", "no-import-cycles", ".urls -> .discovery"),
])
def test_a_forbidden_import_breaks_its_contract(tmp_path, module, line, contract, chain):
    for package in ("smart", "fhir_facade"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    source = tmp_path / module
    source.write_text(source.read_text() + f"\n{line}  # noqa: E402,F401\n")
    result = _lint(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{_contracts()[contract]['name']} BROKEN" in result.stdout
    assert chain in result.stdout
