"""Serving /metrics: plain HTTP on loopback by default, HTTPS (optionally mutual TLS) when configured.

One function for the worker and for the tests, so what a test scrapes over
TLS is exactly what a worker serves, certificate checks included.

Plain HTTP is prometheus_client's own server. For HTTPS its server is not
used: it wraps the listening socket, so every TLS handshake runs in the one
thread that accepts connections, and a single client that connects and
sends nothing (no certificate needed) stops all scraping until it goes
away. Here each handshake runs in its connection's own thread, under a
time limit, and a failed one is dropped quietly.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from prometheus_client import CollectorRegistry, make_wsgi_app, start_http_server
from prometheus_client.exposition import ThreadingWSGIServer

from monitor.settings import MetricsSettings

log = logging.getLogger(__name__)

# A scraper completes its handshake in milliseconds; a peer that has not after this long is dropped.
HANDSHAKE_TIMEOUT_S = 10.0


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


class TLSMetricsServer(ThreadingWSGIServer):
    """A threading WSGI server that does each TLS handshake in the connection's thread."""

    ssl_context: ssl.SSLContext
    handshake_timeout_s = HANDSHAKE_TIMEOUT_S

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.handshake_timeout_s)
        try:
            conn = self.ssl_context.wrap_socket(request, server_side=True)
        except (OSError, ValueError) as exc:  # no or a bad client certificate, plain HTTP, a silent peer
            log.debug("TLS handshake with %s failed: %s", client_address, exc)
            request.close()
            return
        try:
            conn.settimeout(None)
            super().finish_request(conn, client_address)
        finally:
            try:
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.close()


def tls_context(settings: MetricsSettings) -> ssl.SSLContext:
    """The server side of /metrics over TLS; CERT_REQUIRED against the client CA when so configured."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # TLS 1.2 or newer
    ctx.load_cert_chain(str(settings.tls_certfile), str(settings.tls_keyfile))
    if settings.tls_client_auth_required and settings.tls_client_cafile is not None:
        ctx.load_verify_locations(cafile=str(settings.tls_client_cafile))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def serve_metrics(settings: MetricsSettings, registry: CollectorRegistry) -> tuple[Any, threading.Thread]:
    """Start the /metrics server in a daemon thread; returns (server, thread).

    Raises OSError when the address is taken or a certificate, key or CA
    file cannot be loaded (ssl.SSLError is an OSError), so the caller turns
    every start-up failure into one line. The port may be 0 (any free one):
    `server.server_port` tells which.
    """
    if settings.tls_certfile is None:
        server, thread = start_http_server(settings.port, addr=settings.host, registry=registry)
        return server, thread
    ctx = tls_context(settings)  # before binding: a bad key fails without holding the port

    class Server(TLSMetricsServer):
        address_family = socket.getaddrinfo(settings.host, settings.port, type=socket.SOCK_STREAM)[0][0]

    server = Server((settings.host, settings.port), _QuietHandler)
    server.ssl_context = ctx
    server.set_app(make_wsgi_app(registry))
    thread = threading.Thread(target=server.serve_forever, name="metrics-https", daemon=True)
    thread.start()
    return server, thread


def metrics_url(settings: MetricsSettings, port: int | None = None) -> str:
    """Where Prometheus finds the endpoint; `port` is the one actually bound when settings say 0."""
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return f"{settings.scheme}://{host}:{settings.port if port is None else port}/metrics"
