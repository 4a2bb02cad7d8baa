"""The web process's worker (billing/http_worker.py, gunicorn.conf.py's
`worker_class`): slow clients don't stop the service (issue 19, item 4), and
gunicorn's own answers come in the contract's envelope (item 7).

The live tests run gunicorn as the Procfile does (bench/run.py's `serve`:
gunicorn.conf.py, 2 workers x 4 threads) and assert what is answered, never how
fast: the figures are `BENCH_ONLY=slow python3 dev.py bench`'s."""

from __future__ import annotations

import json
import re
import socket
import tempfile
from collections.abc import Iterator

import pytest
import requests

from bench.run import Server, serve
from billing.cli import run_migrations
from billing.http_worker import CUT, WAIT, WHOLE, request_state, wants_continue

LIMITS = {"line_limit": 8190, "head_limit": 8190 + 4 + 100 * 8192 + 4, "body_limit": 1000}
HEAD = b"POST /workspaces HTTP/1.1\r\nHost: x\r\n"
GENEROUS = 60.0  # seconds: a busy CI machine; the answer itself comes at once


def state(data: bytes) -> str:
    return request_state(data, **LIMITS)


def test_a_request_is_handed_over_once_its_head_and_body_are_in() -> None:
    assert state(b"GET /healthz HTTP/1.1\r\nHost: x\r\n") == WAIT
    assert state(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == WHOLE
    assert state(b"\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") == WHOLE  # one empty line first is allowed
    assert state(HEAD + b'Content-Length: 5\r\n\r\n{"a"') == WAIT
    assert state(HEAD + b'Content-Length: 5\r\n\r\n{"a"}') == WHOLE
    assert state(HEAD + b'Content-Length: 5\r\n\r\n{"a"}GET / HTTP/1.1\r\n') == WHOLE  # the next one may follow
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
    assert state(chunked + b"3\r\nabc\r\n") == WAIT
    assert state(chunked + b"3;ext=1\r\nabc\r\n0\r\n") == WAIT
    assert state(chunked + b"3\r\nabc\r\n0\r\n\r\n") == WHOLE
    assert state(chunked + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n") == WAIT
    assert state(chunked + b"3\r\nabc\r\n0\r\nX-Trailer: 1\r\n\r\n") == WHOLE


def test_what_cannot_come_whole_is_handed_over_at_once_for_its_refusal() -> None:
    assert state(HEAD + b"Content-Length: 1001\r\n\r\n") == CUT  # the app answers 413
    assert state(HEAD + b"Transfer-Encoding: chunked\r\n\r\n3e9\r\n") == CUT  # 1001 bytes coming
    assert state(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n") == CUT  # gunicorn answers 400
    assert state(HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n") == CUT
    assert state(HEAD + b"Content-Length: -1\r\n\r\n") == CUT
    assert state(HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\n") == CUT
    assert state(HEAD + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n") == CUT
    assert state(HEAD + b"Transfer-Encoding: gzip\r\n\r\n") == CUT
    assert state(b"GET /healthz HTTP/1.1\nHost: x") == CUT  # a bare LF
    assert state(b"GET /" + b"a" * 8200) == CUT  # 414 before the line ends
    assert state(b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 110_000) == CUT  # 431 before the head ends


def test_a_client_that_expects_100_continue_is_told_to_send_its_body() -> None:
    assert wants_continue(HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n\r\n")
    assert not wants_continue(HEAD + b"Expect: 100-continue\r\nContent-Length: 5\r\n")  # head not all in
    assert not wants_continue(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n")  # HTTP/1.0 ignores it
    assert not wants_continue(HEAD + b"Content-Length: 5\r\n\r\n")


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with tempfile.TemporaryDirectory() as tmp:
        database_url = f"sqlite:///{tmp}/worker.sqlite3"
        run_migrations(database_url)
        with serve(database_url) as running:
            yield running


def address(server: Server) -> tuple[str, int]:
    host, port = server.base.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def exchange(server: Server, data: bytes) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    with socket.create_connection(address(server), timeout=GENEROUS) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_the_service_answers_while_60_slow_clients_hold_connections_open(server: Server) -> None:
    # Each has sent part of a request and then nothing more: half in the head,
    # half in the body. gthread gives each a thread that waits for the rest.
    held = []
    try:
        for i in range(60):
            sock = socket.create_connection(address(server), timeout=GENEROUS)
            if i % 2:
                sock.sendall(
                    b"POST /workspaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n{"
                )
            else:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            held.append(sock)
        for _ in range(10):  # new connections each time, as new visitors
            response = requests.get(f"{server.base}/healthz", timeout=GENEROUS, headers={"Connection": "close"})
            assert response.status_code == 200
        with requests.Session() as session:  # and kept alive
            for _ in range(10):
                assert session.get(f"{server.base}/healthz", timeout=GENEROUS).status_code == 200
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    "request_bytes, status, code",
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, "bad_request"),  # a control byte
        (b"GET /healthz HTTP/1.1\nHost: x\n\n", 400, "bad_request"),
        (b"GET /" + b"a" * 8191 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 100 + b"\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: " + b"b" * 8191 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
    ],
)
def test_gunicorns_own_refusals_come_in_the_contracts_envelope(
    server: Server, request_bytes: bytes, status: int, code: str
) -> None:
    head, _, body = exchange(server, request_bytes).partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0].startswith(f"HTTP/1.1 {status} ".encode())
    assert b"content-type: application/json" in head.lower()
    answer = json.loads(body)
    assert answer["type"] == "invalid_request_error" and answer["code"] == code
    assert answer["request_id"].startswith("req_")
    assert f"x-request-id: {answer['request_id']}".encode() in head.lower()


def test_a_body_over_the_limit_is_refused_without_waiting_for_it(server: Server) -> None:
    head, _, body = exchange(
        server,
        b"POST /workspaces HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{",
    ).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert json.loads(body)["code"] == "payload_too_large"


def test_pipelined_chunked_and_100_continue_requests_are_answered(server: Server) -> None:
    answer = exchange(
        server,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200", b"404", b"200"]
    with socket.create_connection(address(server), timeout=GENEROUS) as sock:
        sock.sendall(
            b"POST /nowhere HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n"
            b"Connection: close\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"{}")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 404 ")


def test_a_route_that_takes_a_picture_has_its_larger_body_read_whole(server: Server) -> None:
    """An organization's create and PATCH take bodies up to 4 MiB (a 2 MiB picture as base64):
    the worker buffers such a body whole; elsewhere the limit stays 1 MiB."""
    from bench.run import Client
    from billing.organizations.pictures import MAX_BASE64_CHARS

    client = Client(server.base, "worker-pictures")
    ws = client.call("POST", "/workspaces", json={"name": "Pictures", "billing_mode": "pooled"})["id"]
    org = client.call("POST", f"/workspaces/{ws}/organizations", json={"name": "Root"})["id"]
    big = "data:image/png;base64," + "A" * MAX_BASE64_CHARS  # 2.8 MB: decodes to zeros, no PNG
    response = client.session.patch(
        f"{server.base}/workspaces/{ws}/organizations/{org}", json={"picture": big}, timeout=GENEROUS
    )
    assert response.status_code == 422 and "picture" in response.json()["errors"]  # read whole, then judged
    response = client.session.post(
        f"{server.base}/workspaces", json={"name": "x", "description": big}, timeout=GENEROUS
    )
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"


def test_slow_picture_uploads_hold_no_thread(server: Server) -> None:
    """A body over 1 MiB on a route that takes one is read in the loop like any other: 40 uploads
    whose bodies come slowly (here: not at all) leave the threads free."""
    held = []
    try:
        for _ in range(40):
            sock = socket.create_connection(address(server), timeout=GENEROUS)
            sock.sendall(
                b"PATCH /workspaces/ws_a/organizations/org_b HTTP/1.1\r\nHost: x\r\n"
                b'Content-Type: application/json\r\nContent-Length: 3000000\r\n\r\n{"picture": "data:'
            )
            held.append(sock)
        for _ in range(10):
            response = requests.get(f"{server.base}/healthz", timeout=GENEROUS, headers={"Connection": "close"})
            assert response.status_code == 200
    finally:
        for sock in held:
            sock.close()


def test_the_body_limit_is_the_routes(session_app: object) -> None:
    limit_for = session_app.config["BODY_LIMIT_FOR"]  # type: ignore[attr-defined]
    org = "/workspaces/ws_a/organizations/org_b"
    assert limit_for("PATCH", org) == limit_for("POST", "/workspaces/ws_a/organizations") == 4 * 1024 * 1024
    assert (
        limit_for("POST", org + "/children?x=1")
        == limit_for("PATCH", "/workspaces/ws_a/organization%73/org_b")
        == 4 * 1024 * 1024
    )
    assert limit_for("PATCH", "http://api.example/workspaces/ws_a/organizations/org_b") == 4 * 1024 * 1024
    for method, target in [
        ("GET", org),
        ("POST", org + "/usage"),
        ("POST", "/workspaces"),
        ("PATCH", "/nowhere"),
        ("POST", "/workspaces/ws_a/billing-accounts"),
    ]:
        assert limit_for(method, target) == 1024 * 1024, (method, target)
