"""The facade's own command line: ``flask --app app import-media PATH`` (issue 15)."""
from __future__ import annotations

from pathlib import Path

import click
from flask.cli import with_appcontext

from fhir_facade.pacs.client import PacsError, get_pacs
from fhir_facade.pacs.media_import import MediaUnreadable, import_media


def _long_string(value: str | None, what: str) -> str | None:
    """A DICOM LO value (PS3.5 Section 6.2: at most 64 characters, no backslash or control character)."""
    if value is None:
        return None
    if not value.strip() or len(value) > 64 or "\\" in value or any(ord(c) < 32 for c in value):
        raise click.BadParameter(f"{what} must be 1 to 64 characters without backslash or control characters")
    return value.strip()


@click.command("import-media")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--patient-id", help="The local PatientID to write into every instance (IHE Import Reconciliation).")
@click.option("--issuer", help="The local IssuerOfPatientID, with --patient-id.")
@click.option("--strict", is_flag=True, help="Store nothing when any file is refused.")
@with_appcontext
def import_media_command(path: Path, patient_id: str | None, issuer: str | None, strict: bool) -> None:
    """Store the instances a CD's DICOMDIR references (a folder or a ZIP) into the PACS via STOW-RS.

    Prints the stored, already present and refused counts, and each refused file with its
    reason. Exit status: 0 all stored or present, 1 some refused, 2 the media or PACS failed.
    """
    patient_id = _long_string(patient_id, "--patient-id")
    issuer = _long_string(issuer, "--issuer")
    if issuer and not patient_id:
        raise click.BadParameter("--issuer needs --patient-id")
    try:
        report = import_media(get_pacs(), path, patient_id, issuer, strict)
    except (MediaUnreadable, PacsError) as exc:
        click.echo(f"import failed: {exc}", err=True)
        raise SystemExit(2) from exc
    for name, reason in report.refused:
        click.echo(f"refused: {name}: {reason}")
    click.echo(f"stored: {len(report.stored)}, already present: {len(report.already_present)}, "
               f"refused: {len(report.refused)}" + (" (strict: nothing stored)" if strict and report.refused else ""))
    if report.refused:
        raise SystemExit(1)


def init_app(app) -> None:
    """Register the facade's commands on *app*."""
    app.cli.add_command(import_media_command)
