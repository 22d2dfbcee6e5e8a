"""Downloads of the public datasets: resumable, verified, atomic, and quiet about secrets.

``download(url, dest, ...)`` streams into ``dest.part`` in 64 KiB chunks, resumes an
interrupted transfer with an HTTP ``Range`` request (206: append; 200: the server
ignored the range, start again; 416: the part is complete if its size is the declared
one, otherwise it is discarded and the download starts again), retries
connection failures and 5xx answers with exponential backoff, verifies the size
and the MD5, and only then renames the part onto ``dest``.  A file that fails its
checksum is deleted and never used.  HTTP 401/403 (access not granted), 404 and a
full disk stop at once with one message naming the file.

Tokens travel in an ``Authorization: Bearer`` header (or a query parameter where a
host needs one) and are redacted from every message this module writes; the
token's value is read from an environment variable at the last moment, so it
never enters Snakemake's stored parameters.

Checksums: pinned in the config where known; otherwise the first verified
download whose size the server (or the Zenodo API) declared records size and MD5 in
a lock file (``checksums.lock.json`` beside the data) that every later run checks
against.

``zenodo_files(record)`` lists a Zenodo record's files (name, size, md5, content
URL) through the records API.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from corereg.errors import CoreregError

CHUNK = (
    64 * 1024
)  # larger chunks lost a partial chunk on disconnects (seen on real cluster file systems)

# Download defaults (a dataset's source may set timeout, retries and backoff)
TIMEOUT_S = 60.0  # seconds to wait for a connection or for data
RETRIES = 5  # retries after a connection error or a 5xx answer
BACKOFF_S = 2.0  # seconds before the first retry, doubled at each further one
ZENODO_API = "https://zenodo.org/api"


class DownloadError(CoreregError):
    """One clear message naming the file (never the token)."""


@dataclass(frozen=True)
class RemoteFile:
    name: str
    url: str
    size: int | None = None
    md5: str | None = None


def redact(text: str, secrets) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def _public_url(url: str) -> str:
    """The URL without credentials: no user or password before the host, no query
    parameters that look like tokens."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<a URL that cannot be parsed>"
    query = [
        (k, "***" if k.lower() in ("token", "access_token") else v)
        for k, v in parse_qsl(parts.query)
    ]
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query, safe="*")))


def _userinfo(url: str) -> list[str]:
    """The credentials written into a URL (``user:password@``), to be redacted."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return [url]  # unparsable: show none of it
    if "@" not in netloc:
        return []
    info = netloc.rsplit("@", 1)[0]
    return [info, *info.split(":", 1)]


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def token_from_env(var: str | None, required: bool, what: str) -> str | None:
    if not var:
        return None
    value = os.environ.get(var, "").strip()
    if required and not value:
        raise DownloadError(
            f"{what}: the access token variable {var} is not set; request access on the data "
            f"host, create a personal token and `export {var}=...` before running"
        )
    return value or None


class ChecksumLock:
    """``{name: {"size": n, "md5": hex}}`` recorded on the first verified download."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, name: str) -> dict | None:
        return self.data.get(name)

    def record(self, name: str, size: int, md5: str) -> None:
        self.data[name] = {"size": size, "md5": md5}
        self._write()

    def forget(self, name: str) -> None:
        """Drop ``name``'s entry (its file turned out not to be what was expected)."""
        if self.data.pop(name, None) is not None:
            self._write()

    def _write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".part")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


class _Progress:
    """tqdm on a terminal; otherwise a plain line every 10 % (or every 30 s without a size)."""

    def __init__(self, name: str, total: int | None, done: int, log):
        self.name, self.total, self.done, self.log = name, total, done, log
        self.bar = None
        self.next_pct, self.last = 10, time.monotonic()
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=done, unit="B", unit_scale=True, desc=name)
            except ImportError:
                self.bar = None

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if self.total:
            pct = 100 * self.done / self.total
            if pct >= self.next_pct:
                self.log(
                    f"[download] {self.name}: {pct:.0f} % ({self.done / 1e6:.1f} of {self.total / 1e6:.1f} MB)"
                )
                self.next_pct = (int(pct) // 10 + 1) * 10
        elif time.monotonic() - self.last > 30:
            self.log(f"[download] {self.name}: {self.done / 1e6:.1f} MB")
            self.last = time.monotonic()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def download(
    url: str,
    dest,
    *,
    size: int | None = None,
    md5: str | None = None,
    token: str | None = None,
    token_query: str | None = None,
    lock: ChecksumLock | None = None,
    retries: int = RETRIES,
    backoff: float = BACKOFF_S,
    timeout: float = TIMEOUT_S,
    log=print,
    session=None,
) -> Path:
    """Fetch ``url`` to ``dest`` (see the module docstring).  Returns ``dest``."""
    import requests

    dest = Path(dest)
    name = dest.name
    secrets = [*([token] if token else []), *_userinfo(url)]
    shown = redact(_public_url(url), secrets)
    try:
        urlsplit(url)
    except ValueError:
        raise DownloadError(f"{dest.name}: {shown} is not a valid URL") from None
    recorded = lock.get(name) if lock is not None else None
    if recorded and md5 is None:
        md5, size = recorded["md5"], size or recorded["size"]
    if dest.is_file():
        if _verified(dest, size, md5):
            log(f"[download] {name}: present and verified")
            return dest
        log(f"[download] {name}: present but fails verification; downloading again")
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(name + ".part")
    headers = {"Authorization": f"Bearer {token}"} if token and not token_query else {}
    if token and token_query:
        parts = urlsplit(url)
        url = urlunsplit(
            parts._replace(query=urlencode([*parse_qsl(parts.query), (token_query, token)]))
        )
    http = session or requests.Session()
    attempt = 0
    declared = size  # the size the caller, the server or the API declared
    while True:
        offset = part.stat().st_size if part.exists() else 0
        req_headers = dict(headers)
        if offset:
            req_headers["Range"] = f"bytes={offset}-"
        try:
            with http.get(url, headers=req_headers, stream=True, timeout=timeout) as resp:
                code = resp.status_code
                if code in (401, 403):
                    raise DownloadError(
                        f"{name}: access not granted by {shown} (HTTP {code}); check that your access "
                        "request was approved and that the token is valid"
                    )
                if code == 404:
                    raise DownloadError(f"{name}: not found at {shown} (HTTP 404)")
                if code == 416:  # nothing left to send: the part is complete, or it is wrong
                    declared = size if size is not None else _total(resp, offset)
                    if declared is not None and offset == declared:
                        break
                    # a part larger than the remote file, or of unknown fit: never a completed file
                    part.unlink()
                    log(
                        f"[download] {name}: the {offset}-byte partial file does not fit the remote "
                        f"file ({declared if declared is not None else 'size not declared'}); "
                        "starting again"
                    )
                    continue
                if code >= 500:
                    raise _Retry(f"HTTP {code}")
                if code not in (200, 206):
                    raise DownloadError(f"{name}: unexpected HTTP {code} from {shown}")
                mode = "ab" if code == 206 and offset else "wb"
                if code == 200 and offset:
                    log(f"[download] {name}: the server ignored the range request; starting again")
                    offset = 0
                total = size or _total(resp, offset)
                declared = total
                progress = _Progress(name, total, offset, log)
                try:
                    with open(part, mode) as f:
                        for chunk in resp.iter_content(CHUNK):
                            f.write(chunk)
                            progress.update(len(chunk))
                except OSError as exc:
                    if exc.errno == errno.ENOSPC:
                        free = shutil.disk_usage(part.parent).free
                        raise DownloadError(
                            f"{name}: disk full while writing {part} ({free / 1e6:.0f} MB free; "
                            f"{(total or 0) / 1e6:.0f} MB needed); the partial file is kept for "
                            "resuming"
                        ) from exc
                    raise
                finally:
                    progress.close()
                if total is not None and part.stat().st_size < total:
                    raise _Retry(f"connection closed after {part.stat().st_size} of {total} bytes")
                break
        except (
            _Retry,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
        ) as exc:
            attempt += 1
            reason = redact(str(exc), secrets)
            if attempt > retries:
                raise DownloadError(
                    f"{name}: download from {shown} failed after {retries} retries ({reason}); "
                    "rerun to resume"
                ) from None
            wait = backoff * 2 ** (attempt - 1)
            log(
                f"[download] {name}: {reason}; retry {attempt}/{retries} in {wait:.0f} s (resuming)"
            )
            time.sleep(wait)
        except requests.exceptions.RequestException as exc:  # redirects, scheme, URL: no retry
            raise DownloadError(
                f"{name}: {shown} cannot be downloaded ({exc.__class__.__name__}: "
                f"{redact(str(exc), secrets)[:200]})"
            ) from None
    got_size = part.stat().st_size
    if size is not None and got_size != size:
        part.unlink()
        raise DownloadError(
            f"{name}: size mismatch ({got_size} bytes, expected {size}); the file was removed"
        )
    got = md5sum(part)
    if md5 is not None and got != md5.lower():
        part.unlink()
        raise DownloadError(
            f"{name}: checksum mismatch (md5 {got}, expected {md5}); the file was removed, "
            "nothing was used"
        )
    os.replace(part, dest)
    if lock is not None and recorded is None:
        if declared is not None and declared == got_size:
            lock.record(name, got_size, got)
            log(f"[download] {name}: recorded size {got_size} and md5 {got} in {lock.path}")
        else:  # a checksum is trusted only from a download whose size the server declared
            log(
                f"[download] {name}: the server declared no size; md5 {got} not recorded in "
                f"{lock.path} (pin it in the config to check later downloads)"
            )
    log(
        f"[download] {name}: {got_size / 1e6:.1f} MB, md5 {got} verified"
        if md5
        else f"[download] {name}: {got_size / 1e6:.1f} MB, md5 {got}"
    )
    return dest


class _Retry(Exception):
    pass


def _total(resp, offset: int) -> int | None:
    rng = resp.headers.get("Content-Range", "")
    if "/" in rng and rng.rsplit("/", 1)[1].isdigit():
        return int(rng.rsplit("/", 1)[1])
    length = resp.headers.get("Content-Length")
    return (
        int(length) + (offset if resp.status_code == 206 else 0)
        if length and length.isdigit()
        else None
    )


def _verified(path: Path, size: int | None, md5: str | None) -> bool:
    if size is not None and path.stat().st_size != size:
        return False
    return md5 is None or md5sum(path) == md5.lower()


def zenodo_files(
    record: str,
    api: str = ZENODO_API,
    token: str | None = None,
    timeout: float = TIMEOUT_S,
    session=None,
) -> list[RemoteFile]:
    """The files of a Zenodo record: name, size, md5 and content URL (records API)."""
    import requests

    http = session or requests.Session()
    url = f"{api.rstrip('/')}/records/{record}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        resp = http.get(url, headers=headers, timeout=timeout)
    except requests.exceptions.RequestException as exc:
        raise DownloadError(
            f"Zenodo record {record}: {_public_url(url)} cannot be reached "
            f"({exc.__class__.__name__})"
        ) from None
    if resp.status_code in (401, 403):
        raise DownloadError(f"Zenodo record {record}: access not granted (HTTP {resp.status_code})")
    if resp.status_code != 200:
        raise DownloadError(f"Zenodo record {record}: HTTP {resp.status_code} from {url}")
    try:
        body = resp.json()
    except ValueError:
        raise DownloadError(
            f"Zenodo record {record}: {_public_url(url)} answered with something that is not JSON "
            "(a login page or a proxy?); check the api setting"
        ) from None
    entries = body.get("files") if isinstance(body, dict) else None
    if not isinstance(entries, list) or any(
        not isinstance(f, dict) or "key" not in f for f in entries
    ):
        raise DownloadError(
            f"Zenodo record {record}: the answer of {_public_url(url)} lists no files with a 'key'"
        )
    files = []
    for f in entries:
        checksum = f.get("checksum", "")
        md5 = checksum.split(":", 1)[1] if checksum.startswith("md5:") else None
        link = f.get("links", {}).get("self") or f"{url}/files/{f['key']}/content"
        files.append(RemoteFile(f["key"], link, f.get("size"), md5))
    return files
