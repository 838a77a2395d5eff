"""FHIR format negotiation (fhir_facade.fhir.render): ``_format`` and Accept, FHIR R4 §2.21.0.6, §3.1.0.10."""
import pytest

from fhir_facade.fhir.outcomes import NotAcceptable
from fhir_facade.fhir.render import FHIR_JSON, FHIR_XML, negotiate


@pytest.mark.parametrize("format_param", ["", " ", ",", ";", ", ;", ";q=1", "html"])
def test_a_format_naming_no_served_type_is_not_acceptable(format_param):
    """``_format=,`` made the parser index an empty list: a 500 found by schemathesis (issue 11)."""
    with pytest.raises(NotAcceptable):
        negotiate(format_param, None)


@pytest.mark.parametrize("format_param, served", [("json", FHIR_JSON), (", xml", FHIR_XML),
                                                   ("application/fhir+json; fhirVersion=4.0", FHIR_JSON)])
def test_the_first_named_format_is_served(format_param, served):
    assert negotiate(format_param, None) == served


@pytest.mark.parametrize("accept", [",", ";", ", ;"])
def test_an_accept_header_naming_nothing_is_not_acceptable(accept):
    with pytest.raises(NotAcceptable):
        negotiate(None, accept)
