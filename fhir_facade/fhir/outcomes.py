"""FHIR errors: exceptions that carry an HTTP status and render as OperationOutcome (FHIR R4 §3.1.0.4)."""
from __future__ import annotations


class FhirError(Exception):
    """An error answered as an OperationOutcome.

    Parameters
    ----------
    diagnostics : str
        Human-readable detail naming the bad value.
    status : int
        HTTP status.
    code : str
        ``OperationOutcome.issue.code`` (FHIR R4 IssueType value set).
    """

    status = 400
    code = "invalid"

    def __init__(self, diagnostics: str, *, status: int | None = None, code: str | None = None):
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class BadSearch(FhirError):
    """A search parameter or value the server cannot process (400)."""

    code = "invalid"


class NotFound(FhirError):
    """The resource does not exist (404)."""

    status = 404
    code = "not-found"


class NotAcceptable(FhirError):
    """The requested format is not served (406)."""

    status = 406
    code = "not-supported"


def operation_outcome(diagnostics: str, code: str = "invalid", severity: str = "error") -> dict:
    """Build an OperationOutcome with one issue."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
