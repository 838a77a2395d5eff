"""Every 405 answer names the methods the resource supports in ``Allow`` (RFC 9110 §15.5.6)."""
from __future__ import annotations

import re

import pytest
from werkzeug.routing import Map


#: Methods a client may try; OPTIONS is always answered (Flask adds it to every rule).
TRIED = ("GET", "POST", "PUT", "DELETE", "PATCH")
_ARGUMENT = re.compile(r"<(?:[a-z]+:)?([a-z_]+)>")


def concrete(rule) -> str:
    """*rule*'s path with every argument replaced by a value each converter accepts."""
    return _ARGUMENT.sub("1.2.3", rule.rule)


def methods_serving(url_map, path: str) -> set[str]:
    """The union of the methods of every rule whose path matches *path*, each rule on its own."""
    methods: set[str] = set()
    for rule in url_map.iter_rules():
        alone = Map([rule.empty()], merge_slashes=False).bind("facade.example")
        methods |= set(alone.allowed_methods(path))
    return methods


def allow_set(response) -> set[str]:
    return {m.strip() for m in response.headers.get("Allow", "").split(",") if m.strip()}


def test_every_route_answers_an_unsupported_method_with_405_and_allow(fake_app):
    client = fake_app.test_client()
    checked = 0
    for rule in fake_app.url_map.iter_rules():
        path = concrete(rule)
        expected = methods_serving(fake_app.url_map, path)
        assert rule.methods <= expected
        for method in sorted(set(TRIED) - expected):
            response = client.open(path, method=method)
            assert response.status_code == 405, (method, path, response.status_code)
            assert allow_set(response) == expected, (method, path, response.headers.get("Allow"))
            checked += 1
    assert checked > 40  # every rule was tried with at least two methods


@pytest.mark.parametrize("path, shape", [
    ("/fhir/ImagingStudy/1.2.3", {"resourceType": "OperationOutcome"}),
    ("/fhir/metadata", {"resourceType": "OperationOutcome"}),
    ("/dicomweb/studies/1.2.3", {"status": 405}),
])
def test_a_405_in_a_protocols_shape_keeps_allow(fake_app, path, shape):
    response = fake_app.test_client().delete(path)
    assert response.status_code == 405
    assert allow_set(response) == {"GET", "HEAD", "OPTIONS"}
    assert shape.items() <= response.get_json().items()


def test_options_lists_the_same_methods(fake_app):
    response = fake_app.test_client().options("/auth/token")
    assert allow_set(response) == {"POST", "OPTIONS"}
