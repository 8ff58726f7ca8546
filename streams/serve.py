"""`msli serve`: a read-only HTTP API over a worker's store.

    GET /users/{id}                  the representation as JSON (?format=avro: the Avro bytes)
    GET /users/{id}/score?items=a,b  late-interaction scores of candidate items (?method=maxsim|
                                     attention|fused)
    GET /health                      liveness and the promoted model version
    GET /metrics                     Prometheus

Both user routes take ?model_version=V to read a version other than the promoted one. Only GET;
404 for unknown users, 405 for other methods, 401 without the bearer token when one is configured
(/health stays open for probes), 413 over `max_candidates`, 307 to the owning worker's API when the
user's partition belongs to another worker. The stdlib threading server is enough: a request is a
RocksDB point read (microseconds) and a (K, d) x (d, N) product, and it adds no dependency.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from encoders import (
    SegmentBatchEncoder,
    attention_scores,
    fused_scores,
    maxsim_scores,
)
from schemas import AvroCodec
from store import RepresentationReader
from streams.config import MsliSettings
from streams.query import representation_json
from streams.routing import RouteTable

__all__ = ["QueryService", "Response", "serve_forever"]

log = logging.getLogger(__name__)

_SCORERS = {"maxsim", "attention", "fused"}


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(status: int, payload: Any, **headers: str) -> Response:
    return Response(status, json.dumps(payload).encode(), headers=headers)


def _error(status: int, message: str, **headers: str) -> Response:
    return _json(status, {"error": message}, **headers)


class QueryService:
    """The API without the HTTP server: (method, target, headers) -> Response."""

    def __init__(
        self,
        settings: MsliSettings,
        reader: RepresentationReader,
        routes: RouteTable | None = None,
        encoder: SegmentBatchEncoder | None = None,
    ) -> None:
        self.settings = settings
        self.reader = reader
        self.routes = routes
        self._encoder = encoder
        self._codec = AvroCodec("UserRepresentation")
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "msli_api_requests",
            "API requests by route and status.",
            ["route", "status"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "msli_api_request_seconds", "API latency.", ["route"], registry=self.registry
        )
        size = Gauge("msli_store_size_bytes", "RocksDB size of the store read.", registry=self.registry)
        size.set_function(reader.store.size_bytes)

    def handle(self, method: str, target: str, headers: dict[str, str]) -> Response:
        started = time.perf_counter()
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.split("/") if p]
        route = _route_name(parts)
        response = self._dispatch(method, parts, parse_qs(url.query), headers, url.path, url.query)
        self._requests.labels(route, str(response.status)).inc()
        self._seconds.labels(route).observe(time.perf_counter() - started)
        return response

    def _dispatch(
        self,
        method: str,
        parts: list[str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        path: str,
        raw: str,
    ) -> Response:
        route = _route_name(parts)
        if route == "unknown":
            return _error(404, f"no such resource: /{'/'.join(parts)}")
        if method != "GET":
            return _error(405, f"{method} is not allowed: this API is read-only", Allow="GET")
        if route != "health" and not self._authorised(headers):
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": 'Bearer realm="msli"'})
        if route == "health":
            return _json(200, {"status": "ok", "model_version": self.reader.promoted_version()})
        if route == "metrics":
            return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
        user_id = parts[1]
        if self.routes is not None and (owner := self.routes.owner(user_id)) is not None:
            location = owner + quote(path) + (f"?{raw}" if raw else "")
            return _error(307, f"user {user_id} is served by {owner}", Location=location)
        version = _one(query, "model_version")
        found = self.reader.get_bytes(user_id, version)
        if found is None:
            which = version or self.reader.promoted_version() or "none promoted"
            return _error(404, f"no representation for user {user_id!r} under model {which}")
        model_version, value = found
        if route == "user":
            if _one(query, "format") == "avro":
                return Response(200, value, "application/avro", {"X-Msli-Model-Version": model_version})
            return _json(200, representation_json(self._codec.decode(value)))
        return self._score(user_id, model_version, value, query)

    def _score(self, user_id: str, model_version: str, value: bytes, query: dict[str, list[str]]) -> Response:
        items = [item for raw in query.get("items", []) for item in raw.split(",") if item]
        if not items:
            return _error(400, "give candidate item ids: ?items=a,b,c")
        if len(items) > self.settings.max_candidates:
            return _error(413, f"{len(items)} candidates; at most {self.settings.max_candidates} per request")
        method = _one(query, "method") or "maxsim"
        if method not in _SCORERS:
            return _error(400, f"unknown method {method!r}; use one of {', '.join(sorted(_SCORERS))}")
        encoder = self._load_encoder()
        if encoder.model_version != model_version:
            return _error(
                409,
                f"this API scores with model {encoder.model_version}, the representation is {model_version}: "
                "run `msli serve` with that model's checkpoint",
            )
        record = self._codec.decode(value)
        candidates = encoder.item_vectors(items)  # (N, d)
        bias = encoder.candidate_biases(items, record.get("seen_item_ids", ()))  # (N,) or None
        if method == "fused":
            scores = fused_scores(np.frombuffer(record["fused"], dtype="<f4"), candidates, item_bias=bias)
        else:
            vectors = np.stack(
                [np.frombuffer(s["vector"], dtype="<f4") for s in record["segments"]]
            )  # (K, d)
            weights = np.array([s["weight"] for s in record["segments"]], dtype=np.float32)  # (K,)
            scorer = maxsim_scores if method == "maxsim" else attention_scores
            scores = scorer(vectors, weights, candidates, item_bias=bias)
        return _json(
            200,
            {
                "user_id": user_id,
                "model_version": model_version,
                "method": method,
                "scores": [{"item_id": i, "score": float(s)} for i, s in zip(items, scores, strict=True)],
            },
        )

    def _authorised(self, headers: dict[str, str]) -> bool:
        token = self.settings.api_token
        if not token:
            return True
        given = headers.get("authorization", "")
        return given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())

    def _load_encoder(self) -> SegmentBatchEncoder:
        if self._encoder is None:  # loaded on the first score request: reads need no model
            from streams.app import load_encoder

            self._encoder = load_encoder(self.settings)
        return self._encoder


def _route_name(parts: list[str]) -> str:
    if parts in (["health"], ["metrics"]):
        return parts[0]
    if len(parts) == 2 and parts[0] == "users":
        return "user"
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "score":
        return "score"
    return "unknown"


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _handler(service: QueryService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "msli"
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed ACK
        # adds ~40 ms to every response (measured here: 44 ms p50 with it, 0.6 ms without).
        disable_nagle_algorithm = True

        def _respond(self) -> None:
            if self.command != "GET":
                self.close_connection = True  # its body, if any, is never read
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                response = service.handle(self.command, self.path, headers)
            except Exception as exc:  # one bad request must not take the API down
                log.exception("error answering %s %s", self.command, self.path)
                response = _error(500, f"internal error: {type(exc).__name__}")
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(response.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _respond

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def serve_forever(service: QueryService, host: str, port: int) -> None:
    """Answer requests until interrupted."""
    server = ThreadingHTTPServer((host, port), _handler(service))
    server.daemon_threads = True
    log.info("serving %s on http://%s:%d", service.reader.store.path, host, server.server_port)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
