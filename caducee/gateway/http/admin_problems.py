"""problem+json refusals of the admin API (RFC 9457), shared by its modules."""

from __future__ import annotations

from starlette.responses import JSONResponse

from caducee.gateway.http.app import PROBLEM_JSON


class ApiProblem(Exception):
    """A refusal said as problem+json."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def problem(status: int, code: str, detail: str, **headers: str) -> JSONResponse:
    """An RFC 9457 problem with a stable ``code``."""
    body = {
        "type": f"urn:caducee:problem:{code}",
        "title": code.replace("-", " "),
        "status": status,
        "detail": detail,
        "code": code,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)
