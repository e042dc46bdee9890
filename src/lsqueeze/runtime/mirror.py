"""A local dataset mirror: a directory served on 127.0.0.1 over HTTP, so that the real download,
checksum and conversion code runs offline (rehearsals, benchmarks and tests)."""

from __future__ import annotations

import contextlib
import functools
import http.server
import threading
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no line per request: the caller says what was served
        pass


class _Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that hangs up early is no error
        pass


@contextlib.contextmanager
def serve_directory(directory: str | Path, port: int = 0):
    """Serve `directory` on 127.0.0.1 while the block runs; yields its base URL (with a trailing
    slash). port=0: any free port; otherwise `port` or the next free one of the 50 after it (a
    stable URL keeps the data jobs' parameters, so a rerun reruns only what failed), else any."""
    handler = functools.partial(_Handler, directory=str(directory))
    srv = None
    for p in ([*range(port, port + 50)] if port else []) + [0]:
        try:
            srv = _Server(("127.0.0.1", p), handler)
            break
        except OSError:
            continue
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}/"
    finally:
        srv.shutdown()
        srv.server_close()
