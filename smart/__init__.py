"""SMART on FHIR authorization server (SMART App Launch 2.x on Authlib)."""
from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Register the database, the authorization server, its routes and CLI on *app*."""
