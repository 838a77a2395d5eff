"""What a verified access token allows: :class:`AccessGrant`, the patients and studies a grant
reaches by the context of the scope that allows the interaction.

Which patients a grant reaches depends on the context of the scope that allows the
interaction:

- ``patient/``: the token's ``patient`` only;
- ``user/`` of a patient user (``fhirUser`` ``Patient/x``): that patient only;
- ``user/`` of any other user: the user's stored access list (:class:`smart.store.models.PatientAccess`,
  by username, the token's ``sub``; :mod:`smart.authz.access_lists`);
- ``system/``: the backend client's stored access list (by ``client_id``).

A stored list is "all patients" or named Patient ids; without one, no patient (SMART Imaging
Access: "missing patient context SHALL NOT be treated as authorization"). Scope grammar is
:mod:`smart.scopes` (SMART App Launch 2.2 §Scopes and Launch Context).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

from smart import scopes as scope_grammar
from smart.authz.access_lists import stored_patients
from smart.authz.errors import Forbidden
from smart.store.models import ACCESS_CLIENT, ACCESS_USER

#: ``scopes.permits`` memoised: every proxied request asks the same few questions of the
#: same few scope strings, and parsing them each time is most of the decision's cost.
_permits = functools.lru_cache(maxsize=4096)(scope_grammar.permits)

#: Contexts from most to least restricted (SMART App Launch 2.2 §Scopes).
_CONTEXTS = ("system", "user", "patient")


@dataclass(frozen=True)
class AccessGrant:
    """What a verified access token allows.

    Attributes
    ----------
    claims : dict
        The token's verified claims.
    scope : str
        Granted scopes, space separated.
    patient : str or None
        FHIR Patient id of the launch context.
    client_id : str or None
        The client the token was issued to.
    issuer : str or None
        The trusted EHR that issued the token; ``None`` for the facade's own tokens.
    ehr_patient : str or None
        The EHR's Patient id of an EHR token's ``patient`` (``patient`` is then the facade's
        id of the PatientID it maps to).
    study : str or None
        The one StudyInstanceUID a share link's token reaches (:mod:`smart.tokens.shares`);
        ``None``: no study binding.
    share : str or None
        The id of the share link that minted the token; checked on every request.
    """

    claims: dict
    scope: str
    patient: str | None
    client_id: str | None
    issuer: str | None = None
    ehr_patient: str | None = None
    study: str | None = None
    share: str | None = None

    def context_for(self, resource_type: str, interaction: str) -> str | None:
        """The least restricted context (system, user, patient) whose scopes allow the interaction."""
        for context in _CONTEXTS:
            if _permits(self.scope, resource_type, interaction, contexts=(context,)):
                return context
        return None

    def context(self, resource_type: str, interaction: str) -> str:
        """The context whose scopes allow the interaction, as :meth:`context_for`.

        Raises
        ------
        Forbidden
            If no scope covers the interaction, or a patient-level scope has no patient context.
        """
        context = self.context_for(resource_type, interaction)
        if context is None:
            raise Forbidden(f"no granted scope allows {resource_type} {interaction}")
        if context == "patient" and not self.patient:
            raise Forbidden("patient-level scope without a patient in context")
        return context

    def patients(self, resource_type: str, interaction: str = "r") -> frozenset[str] | None:
        """The Patient ids this grant may see for *resource_type*, or ``None`` for every patient.

        The one answer every route asks (see the module docstring). An empty set means no
        patient at all.

        Raises
        ------
        Forbidden
            If no scope covers the interaction, or a patient-level scope has no patient context.
        """
        context = self.context(resource_type, interaction)
        if self.study is not None and interaction == "s":
            # A token bound to one study searches nothing (FHIR); DICOMweb's top-level QIDO asks
            # :meth:`study_search` instead, which limits the search to that study.
            raise Forbidden("this access token reaches one study and may not search")
        if context == "patient":
            return frozenset({self.patient})
        if context == "user":
            own = self.own_patient()
            if own is not None:
                return frozenset({own})
            return stored_patients(ACCESS_USER, self.access_subject(self.claims.get("sub")))
        return stored_patients(ACCESS_CLIENT, self.access_subject(self.client_id))

    def check_study(self, study_uid: str) -> None:
        """Refuse a study other than the one a share's token is bound to (issue 15).

        Raises
        ------
        Forbidden
            The grant is bound to another study.
        """
        if self.study is not None and study_uid != self.study:
            raise Forbidden("the access token is not for this study")

    def study_search(self, resource_type: str = "ImagingStudy") -> tuple[frozenset[str] | None, str | None]:
        """What a QIDO-RS search may return: the patients (as :meth:`patients`) and the one
        StudyInstanceUID the results are limited to (``None``: any of those patients' studies).

        Raises
        ------
        Forbidden
            As :meth:`patients`.
        """
        if self.study is None:
            return self.patients(resource_type, "s"), None
        self.context(resource_type, "s")
        return self.patients(resource_type, "r"), self.study

    def access_subject(self, name) -> str:
        """The key of a stored access list: the client id or username, ``@issuer`` for an EHR's."""
        name = str(name or "")
        return f"{name}@{self.issuer}" if name and self.issuer else name

    def own_patient(self) -> str | None:
        """The Patient id of a patient user (``fhirUser`` ``Patient/x``), else ``None``.

        For an EHR token, only its own mapped ``patient`` when ``fhirUser`` names that Patient.
        """
        fhir_user = str(self.claims.get("fhirUser") or "")
        marker = "Patient/"
        own = fhir_user[fhir_user.index(marker) + len(marker):] if marker in fhir_user else None
        if self.issuer is not None:
            return self.patient if own is not None and own == self.ehr_patient else None
        return own

    def public_patient(self, patient: str) -> str:
        """The id a client of this grant knows Patient *patient* by: the EHR's id for the
        token's own patient of an EHR token, else the facade's id."""
        return self.ehr_patient if self.ehr_patient is not None and patient == self.patient else patient

    def local_patient(self, value: str) -> str:
        """The facade's Patient id for a patient id the client sent (``?patient=``).

        An EHR token with a patient speaks the EHR's ids: its ``patient`` maps to the facade's;
        any other value is not the token's patient (SMART Imaging Access: 403).

        Raises
        ------
        Forbidden
            An EHR token with a patient, and *value* another patient.
        """
        if self.ehr_patient is None:
            return value
        if value == self.ehr_patient:
            return self.patient
        raise Forbidden("the access token is not for this patient")
