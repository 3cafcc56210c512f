"""The review server: 127.0.0.1 only, one page, a JSON API, and previews of manifest rows.

Routes::

    GET  /                                   the review page (token embedded)
    GET  /api/queues                         queues, totals and progress
    GET  /api/page?queue=Q&offset=N&limit=M  items N..N+M of a queue (M <= 200)
    GET  /api/next?queue=Q&from=N            the next position still to be decided
    GET  /api/image?key=K                    preview JPEG of an image in the manifests
    POST /api/decide  {"key": K, "decision": D}
    POST /api/undo    {}

Guards: the socket is bound to 127.0.0.1; a request whose Host header is not
``127.0.0.1:PORT`` or ``localhost:PORT`` is refused (DNS rebinding); a POST needs the
per-server random token (``X-Datagate-Token``), a JSON body and, when the browser sends one,
a same-origin ``Origin``; images are named by a key the manifests hold, never by a path;
the page puts every data value on screen as text, under a nonce-based CSP.
"""

from __future__ import annotations

import hmac
import json
import secrets
import socketserver
import sys
import threading
import traceback
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from datagate.contract import META_FILE, load_meta
from datagate.curation.overrides import DECISIONS
from datagate.errors import InputError
from datagate.review.decisions import DecisionLog, Refused
from datagate.review.page import render_page
from datagate.review.previews import Previews
from datagate.review.queues import MAX_PAGE, Gate

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_HEADER = "X-Datagate-Token"
MAX_BODY = 4096


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def find_scan(gate_dir: Path, scan: Path | None = None) -> Path:
    """The scan folder whose meta.json records the shards: ``--scan``, else GATE_DIR/scan,
    else GATE_DIR itself (enforce writes inside a scan folder not named ``scan``)."""
    candidates = [scan] if scan is not None else [gate_dir / "scan", gate_dir]
    for candidate in candidates:
        if (candidate / META_FILE).exists():
            return candidate
    raise InputError(
        f"{candidates[0]}: no scan {META_FILE} (the review reads images back from the shards "
        "it records)",
        hint="pass the scan folder with --scan DIR",
    )


class ReviewApp:
    """What the server serves: a gate's queues, the decisions in force, and previews."""

    def __init__(
        self, gate_dir: Path, overrides: Path, *, scan: Path | None = None, reviewer: str = ""
    ) -> None:
        self.gate_dir = gate_dir
        Gate.check(gate_dir)
        self.scan_dir = find_scan(gate_dir, scan)
        meta = load_meta(self.scan_dir)
        detector = meta.get("detector")
        threshold = detector["calibration"].get("threshold") if detector else None
        self.threshold = float(threshold) if isinstance(threshold, (int, float)) else None
        self._gate = Gate(gate_dir, self.threshold)
        self.log = DecisionLog(overrides, reviewer)
        self.previews = Previews(meta)
        self.generation = 1
        self._lock = threading.Lock()

    def gate(self) -> Gate:
        """The gate as its manifests are now: reopened when ``enforce`` rewrote them."""
        with self._lock:
            if self._gate.changed():
                try:
                    self._gate = Gate(self.gate_dir, self.threshold)
                    self.generation += 1
                except InputError:
                    pass  # keep serving what was there until the new manifests are readable
            return self._gate

    def _queue(self, gate: Gate, name: str) -> str:
        if name not in gate.queues:
            raise ApiError(
                HTTPStatus.NOT_FOUND, f"no queue {name!r} (queues: {', '.join(gate.queues)})"
            )
        return name

    def queues(self) -> dict[str, Any]:
        gate = self.gate()
        _, decided, version = self.log.state()
        progress = gate.progress(decided, version)
        return {
            "generation": self.generation,
            "gate": str(self.gate_dir),
            "overrides": str(self.log.path),
            "reviewer": self.log.reviewer,
            "decisions": len(decided),
            "undoable": self.log.undoable,
            "queues": [
                {
                    "name": q.name,
                    "title": q.title,
                    "about": q.about,
                    "total": q.total,
                    "decided": progress[q.name],
                }
                for q in gate.queues.values()
            ],
        }

    def page(self, name: str, offset: int, limit: int) -> dict[str, Any]:
        gate = self.gate()
        name = self._queue(gate, name)
        by_sha, decided, version = self.log.state()
        items = gate.page(name, offset, limit, by_sha)
        shown = [*items, *(i["original"] for i in items if i.get("original"))]
        self.previews.expect((i["shard"], i["member"]) for i in shown if i.get("shard"))
        return {
            "generation": self.generation,
            "queue": name,
            "offset": offset,
            "limit": limit,
            "total": gate.queues[name].total,
            "decided": gate.progress(decided, version)[name],
            "items": items,
        }

    def next(self, name: str, start: int) -> dict[str, Any]:
        gate = self.gate()
        name = self._queue(gate, name)
        _, decided, version = self.log.state()
        return {
            "generation": self.generation,
            "position": gate.next_undecided(name, start, decided, version),
        }

    def image(self, key: str) -> bytes:
        gate = self.gate()
        found = gate.locate(key)
        if found is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "not an image in this gate's manifests")
        manifest, row = found
        (record,) = manifest.rows(_rows(row), ["shard", "member", "error"])
        if record.get("error"):  # what the scan could not read is not read here either
            raise ApiError(HTTPStatus.NOT_FOUND, f"no preview: {record['error']}")
        preview = self.previews.get(record["shard"], record["member"])
        if preview is None:
            raise ApiError(
                HTTPStatus.NOT_FOUND, "no preview: cannot be read from its shard or does not decode"
            )
        return preview

    def decide(self, key: str, decision: str) -> dict[str, Any]:
        if decision not in DECISIONS:
            raise ApiError(
                HTTPStatus.BAD_REQUEST,
                f"decision: expected one of {', '.join(DECISIONS)}, got {decision!r:.40}",
            )
        gate = self.gate()
        found = gate.locate(key)
        if found is None:
            raise ApiError(HTTPStatus.NOT_FOUND, "not an image in this gate's manifests")
        manifest, row = found
        (record,) = manifest.rows(_rows(row), ["sha256"])
        sha = record.get("sha256")
        if not sha:
            raise ApiError(
                HTTPStatus.CONFLICT,
                f"{key}: the file could not be read, so it has no content hash to decide on",
            )
        override = self.log.record(sha, decision)
        _, decided, version = self.log.state()
        return {
            "generation": self.generation,
            "decision": asdict(override),
            "progress": gate.progress(decided, version),
            "undoable": self.log.undoable,
        }

    def undo(self) -> dict[str, Any]:
        undone, in_force = self.log.undo()
        gate = self.gate()
        _, decided, version = self.log.state()
        return {
            "generation": self.generation,
            "undone": asdict(undone),
            "in_force": asdict(in_force) if in_force else None,
            "progress": gate.progress(decided, version),
            "undoable": self.log.undoable,
        }


def _rows(row: int) -> Any:
    return np.array([row], dtype=np.int64)


def _int(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name, [str(default)])[0]
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            HTTPStatus.BAD_REQUEST, f"{name}: expected an integer, got {raw!r:.40}"
        ) from None
    if not low <= value <= high:
        raise ApiError(HTTPStatus.BAD_REQUEST, f"{name}: expected {low}..{high}, got {value}")
    return value


class Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "datagate-review"
    sys_version = ""
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the URL is what matters
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # ------------------------------------------------------------------ guards

    def _host_ok(self) -> bool:
        host = (self.headers.get("Host") or "").lower()
        port = self.server.port
        return host in (f"127.0.0.1:{port}", f"localhost:{port}")

    def _post_ok(self) -> None:
        token = self.headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(token.encode(), self.server.token.encode()):
            raise ApiError(HTTPStatus.FORBIDDEN, "missing or wrong token: reload the page")
        origin = self.headers.get("Origin")
        port = self.server.port
        if origin is not None and origin not in (
            f"http://{HOST}:{port}",
            f"http://localhost:{port}",
        ):
            raise ApiError(HTTPStatus.FORBIDDEN, f"cross-origin request refused ({origin:.80})")
        if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "expected a JSON body")

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if length > MAX_BODY:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        raw = self.rfile.read(length) if length > 0 else b"{}"
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "request body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "request body must be a JSON object")
        return body

    # ------------------------------------------------------------------ dispatch

    def _handle(self, method: str) -> None:
        if method == "POST":  # an unread body must not be parsed as the next request
            self.close_connection = True
        try:
            if not self._host_ok():
                raise ApiError(
                    HTTPStatus.FORBIDDEN,
                    "unexpected Host header: this server answers only to "
                    f"{HOST}:{self.server.port} and localhost:{self.server.port}",
                )
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            app = self.server.app
            if method == "GET" and url.path == "/":
                self._page()
            elif method == "GET" and url.path == "/favicon.ico":
                self._send(HTTPStatus.NO_CONTENT, b"", "text/plain")
            elif method == "GET" and url.path == "/api/queues":
                self._json(app.queues())
            elif method == "GET" and url.path == "/api/page":
                name = query.get("queue", [""])[0]
                offset = _int(query, "offset", 0, 0, 2**62)
                limit = _int(query, "limit", 100, 1, MAX_PAGE)
                self._json(app.page(name, offset, limit))
            elif method == "GET" and url.path == "/api/next":
                start = _int(query, "from", 0, 0, 2**62)
                self._json(app.next(query.get("queue", [""])[0], start))
            elif method == "GET" and url.path == "/api/image":
                image = app.image(query.get("key", [""])[0])
                self._send(HTTPStatus.OK, image, "image/jpeg", cache="private, max-age=3600")
            elif method == "POST" and url.path in ("/api/decide", "/api/undo"):
                self._post_ok()
                body = self._body()
                if url.path == "/api/undo":
                    self._json(app.undo())
                else:
                    key, decision = body.get("key"), body.get("decision")
                    if not isinstance(key, str) or not isinstance(decision, str):
                        raise ApiError(
                            HTTPStatus.BAD_REQUEST, 'expected {"key": ..., "decision": ...}'
                        )
                    self._json(app.decide(key, decision))
            elif url.path in ("/", "/api/decide", "/api/undo") or url.path.startswith("/api/"):
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {url.path} not allowed")
            else:
                raise ApiError(HTTPStatus.NOT_FOUND, f"no such page: {url.path:.80}")
        except ApiError as exc:
            self._json({"error": exc.message}, exc.status)
        except Refused as exc:
            self._json({"error": str(exc)}, HTTPStatus.CONFLICT)
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # a bug must not kill the server; say so and carry on
            traceback.print_exc(file=sys.stderr)
            self._json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    # ------------------------------------------------------------------ responses

    def _page(self) -> None:
        nonce = secrets.token_urlsafe(16)
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        )
        body = render_page(self.server.token, nonce).encode("utf-8")
        self._send(HTTPStatus.OK, body, "text/html; charset=utf-8", csp=csp)

    def _json(self, obj: Any, status: int = HTTPStatus.OK) -> None:
        body = json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self._send(status, body, "application/json; charset=utf-8")

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        cache: str = "no-store",
        csp: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        if self.close_connection:
            self.send_header("Connection", "close")
        if csp:
            self.send_header("Content-Security-Policy", csp)
        self.end_headers()
        self.wfile.write(body)


class ReviewServer(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 for one :class:`ReviewApp`."""

    daemon_threads = True

    def __init__(self, app: ReviewApp, port: int = DEFAULT_PORT) -> None:
        self.app = app
        self.token = secrets.token_urlsafe(32)
        try:
            super().__init__((HOST, port), Handler)
        except OSError as exc:
            raise InputError(
                f"cannot listen on {HOST}:{port}: {exc.strerror or exc}",
                hint="pass another --port, or --port 0 for any free port",
            ) from None

    def server_bind(self) -> None:
        # skip HTTPServer's reverse DNS lookup of the address: it is always 127.0.0.1
        socketserver.TCPServer.server_bind(self)
        self.server_name = HOST
        self.server_port = self.port

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"
