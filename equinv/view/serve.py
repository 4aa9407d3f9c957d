"""Serve a page folder over HTTP on 127.0.0.1 only (``equinv view --serve PORT``).

The socket is bound before the page is computed (:func:`bind`), so a port in use is refused at once,
before minutes of feature extraction.
"""

from __future__ import annotations

import errno
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from equinv.errors import InputError

HOST = "127.0.0.1"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # one line per request would drown the CLI's output
        pass


def bind(directory: str | Path, port: int) -> ThreadingHTTPServer:
    """A server for ``directory`` bound to ``127.0.0.1:port`` (0: any free port), not yet serving.

    Raises :class:`InputError` when the port is in use or cannot be bound.
    """
    if not 0 <= port <= 65535:
        raise InputError(f"--serve {port}: a port is 0..65535")
    handler = partial(_QuietHandler, directory=str(directory))
    try:
        return ThreadingHTTPServer((HOST, port), handler)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise InputError(f"--serve {port}: port {port} on {HOST} is already in use; choose another port "
                             "(or 0 for any free one)") from None
        raise InputError(f"--serve {port}: cannot listen on {HOST}:{port} ({e.strerror or e})") from None


def url(server: ThreadingHTTPServer) -> str:
    """``http://127.0.0.1:PORT/index.html`` of a bound server."""
    return f"http://{HOST}:{server.server_address[1]}/index.html"
