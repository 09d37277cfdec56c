"""Dependencies of the analytics routes: the read-side use case and the validated query parameters."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query, Request

from lt_analytics.usecases.reports import Reports

__all__ = ["ID_PATTERN", "IdParam", "OptionalId", "ReportsDep"]


def _reports(request: Request) -> Reports:
    reports: Reports = request.app.state.reports
    return reports


ReportsDep = Annotated[Reports, Depends(_reports)]
# Identifiers: printable text only (a NUL byte cannot even be stored in PostgreSQL text).
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
IdParam = Annotated[str, Query(min_length=1, max_length=200, pattern=ID_PATTERN)]
OptionalId = Annotated[str | None, Query(min_length=1, max_length=200, pattern=ID_PATTERN)]
