"""uvicorn's HTTP/1.1 protocol (h11), answering the requests it refuses itself as JSON.

A request that is not valid HTTP (no Host, two Hosts, a bad Content-Length, ...) never reaches
the app: uvicorn answers it with a plain-text 400. This one answers the same 400 the way every
other error is answered, ``{"detail", "error_kind"}``, with h11's reason in the sentence.
h11 always, never httptools where installed: the same checks everywhere (httptools lets a
request without a Host header through).
"""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from engine.errors import InputError

BAD_REQUEST_KIND = InputError.kind  # 400 and 422 both say bad_input (docs/service-api.md)


def bad_request_body(reason: str) -> bytes:
    detail = (f"the request is not valid HTTP/1.1 ({reason or 'malformed'}): send one Host "
              "header and a Content-Length that matches the body")
    return json.dumps({"detail": detail, "error_kind": BAD_REQUEST_KIND}).encode()


class JsonErrorsH11Protocol(H11Protocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.refusal = ""
        parse = self.conn.next_event

        def next_event():  # keeps h11's reason, which uvicorn replaces by a fixed sentence
            try:
                return parse()
            except h11.RemoteProtocolError as exc:
                self.refusal = str(exc)
                raise

        self.conn.next_event = next_event

    def send_400_response(self, msg: str) -> None:
        body = bad_request_body(self.refusal)
        event = h11.Response(status_code=400, reason=b"Bad Request", headers=[
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close")])
        for part in (event, h11.Data(data=body), h11.EndOfMessage()):
            self.transport.write(self.conn.send(part))
        self.transport.close()
