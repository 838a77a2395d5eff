"""openapi/openapi.yaml describes every HTTP route the facade serves (and no route it lacks)."""
import re
from pathlib import Path

import yaml


SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openapi.yaml"


def spec_paths():
    return yaml.safe_load(SPEC.read_text())["paths"]


def test_spec_is_openapi_3_with_responses_everywhere():
    spec = yaml.safe_load(SPEC.read_text())
    assert spec["openapi"].startswith("3.")
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            assert operation.get("responses"), f"{method.upper()} {path} has no responses"


def test_every_flask_route_is_described(fake_app):
    documented = []
    for path, operations in spec_paths().items():
        pattern = re.sub(r"\{[^}]+\}", "[^/]+", path)
        documented.append((re.compile(pattern + "$"), {m.upper() for m in operations}))
    samples = {"<study_id>": "1.2.3", "<endpoint_id>": "dicomweb", "<patient_id>": "P1"}
    for rule in fake_app.url_map.iter_rules():
        if rule.endpoint == "static" or "<path:" in rule.rule:
            continue
        concrete = rule.rule
        for placeholder, value in samples.items():
            concrete = concrete.replace(placeholder, value)
        methods = rule.methods - {"HEAD", "OPTIONS"}
        found = [ms for rx, ms in documented if rx.match(concrete)]
        assert found, f"{rule.rule} is not in openapi.yaml"
        assert methods <= set().union(*found), f"{rule.rule} {methods} not all documented"


def test_every_dicomweb_path_below_a_study_is_described():
    from fhir_facade.dicomweb.api import RESOURCE_PATHS
    paths = list(spec_paths())
    for shape in RESOURCE_PATHS:
        parts = []
        for i, part in enumerate(shape):
            if part in ("uid", "framelist", "tag"):
                part = {"uid": "1.2", "framelist": "1", "tag": "7fe00010"}[part]
            parts.append(part)
        concrete = "/dicomweb/studies/1.2" + "".join("/" + p for p in parts)
        assert any(re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", p), concrete) for p in paths), concrete


def test_the_uid_pattern_is_the_servers_uid_check():
    """The spec's UID (PS3.5 Section 9.1: no leading zeros, at most 64 characters) is is_uid."""
    from hypothesis import given, settings, strategies as st

    from fhir_facade.fhir.search_params import is_uid

    uid = yaml.safe_load(SPEC.read_text())["components"]["schemas"]["UID"]
    pattern = re.compile(uid["pattern"])

    def in_spec(value: str) -> bool:
        return bool(pattern.search(value)) and len(value) <= uid["maxLength"]

    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(st.text(alphabet="0123456789.", max_size=70) | st.from_regex(pattern, fullmatch=True))
    def agree(value):
        assert in_spec(value) == is_uid(value), value

    agree()
    for value in ("0", "1.2.840.10008", "1.0.3", "01.2", "1.02", "1..2", "1.", ".1", "1" * 64, "1" * 65):
        assert in_spec(value) == is_uid(value), value
