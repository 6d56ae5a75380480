"""The service's own ``error_kind`` values: why a request was refused (HTTP 4xx).

A failed job's kind is its engine error's (engine.errors: bad_input, missing_model, ...,
INTERNAL_KIND); these name what only the HTTP layer refuses. Stable keys for programs: the
sentences beside them may be reworded at any time.
"""

from __future__ import annotations

UNAUTHORIZED = "unauthorized"  # 401
FORBIDDEN_HOST = "forbidden_host"  # 403
NOT_FOUND = "not_found"  # 404
METHOD_NOT_ALLOWED = "method_not_allowed"  # 405
JOB_ENDED = "job_ended"  # 409: cancelling a job that already ended
NOT_READY = "not_ready"  # 409: a result or file asked of a job that has not finished
NOT_KEPT = "not_kept"  # 404: /file?candidate=K of a candidate that was not written
OUTPUT_GONE = "output_gone"  # 410
TOO_LARGE = "too_large"  # 413
UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415
QUEUE_FULL = "queue_full"  # 429
HTTP_ERROR = "http_error"  # any other refusal of the HTTP layer

_BY_STATUS = {401: UNAUTHORIZED, 403: FORBIDDEN_HOST, 404: NOT_FOUND, 405: METHOD_NOT_ALLOWED,
              410: OUTPUT_GONE, 413: TOO_LARGE, 415: UNSUPPORTED_MEDIA_TYPE, 429: QUEUE_FULL}


def for_status(status: int) -> str:
    return _BY_STATUS.get(status, "bad_input" if status in (400, 422) else HTTP_ERROR)
