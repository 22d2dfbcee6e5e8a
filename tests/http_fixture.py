"""A loopback HTTP server standing in for the data hosts (Learn2Reg cloud, Zenodo).

Serves byte strings at paths with real HTTP semantics: ``Range`` requests (206 with
``Content-Range``, 416 past the end), files that need ``Authorization: Bearer
<token>`` (403 otherwise), the Zenodo records API (``/api/records/<id>`` with
``files[].key/size/checksum/links.self``), and faults on demand: drop the
connection after N bytes (once), serve corrupted bytes, ignore ``Range``.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    data: bytes
    token: str | None = None  # required bearer token
    drop_after: int | None = None  # close the connection after this many bytes, once
    corrupt: bool = False  # flip bytes (the declared md5 stays that of ``data``)
    ignore_range: bool = False
    no_length: bool = (
        False  # declare no size: no Content-Length, the body ends when the connection closes
    )
    hits: list = field(default_factory=list)  # (Range header, status) per request


class LoopbackServer:
    def __init__(self):
        self.files: dict[str, Served] = {}
        self.records: dict[str, list[str]] = {}  # record id -> paths of its files
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                path = self.path.split("?", 1)[0]
                if path.startswith("/api/records/") and path.count("/") == 3:
                    return server._record(self, path.rsplit("/", 1)[1])
                f = server.files.get(path)
                if f is None:
                    return server._send(self, 404, b"not found")
                auth = self.headers.get("Authorization", "")
                if f.token and auth != f"Bearer {f.token}":
                    f.hits.append((self.headers.get("Range"), 403))
                    return server._send(self, 403, b"forbidden")
                data = bytes(b ^ 0xFF for b in f.data) if f.corrupt else f.data
                rng = None if f.ignore_range else self.headers.get("Range")
                start = 0
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        f.hits.append((rng, 416))
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return None
                body = data[start:]
                status = 206 if rng else 200
                f.hits.append((rng, status))
                self.send_response(status)
                if f.no_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if f.drop_after is not None:
                    cut, f.drop_after = f.drop_after, None
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                self.wfile.write(body)
                return None

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _send(self, handler, status: int, body: bytes, ctype: str = "text/plain") -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _record(self, handler, record: str) -> None:
        if record not in self.records:
            return self._send(handler, 404, b"no such record")
        files = []
        for path in self.records[record]:
            f = self.files[path]
            key = path.rsplit("/", 2)[-2] if path.endswith("/content") else path.rsplit("/", 1)[-1]
            files.append(
                {
                    "key": key,
                    "size": len(f.data),
                    "checksum": "md5:" + hashlib.md5(f.data).hexdigest(),
                    "links": {"self": self.url + path},
                }
            )
        body = json.dumps({"id": record, "files": files}).encode()
        return self._send(handler, 200, body, "application/json")

    def add(self, path: str, data: bytes, **kw) -> Served:
        self.files[path] = Served(data, **kw)
        return self.files[path]

    def add_zenodo(self, record: str, name: str, data: bytes, **kw) -> Served:
        path = f"/api/records/{record}/files/{name}/content"
        self.records.setdefault(record, []).append(path)
        return self.add(path, data, **kw)

    def __enter__(self) -> LoopbackServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
