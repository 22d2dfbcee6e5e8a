"""Downloads against a loopback HTTP server: resume, verification, access errors, secrets."""

import hashlib
import os

import pytest

from corereg.data.sources import ChecksumLock, DownloadError, download, zenodo_files
from http_fixture import LoopbackServer

DATA = os.urandom(700_000)  # eleven 64 KiB chunks
MD5 = hashlib.md5(DATA).hexdigest()
TOKEN = "s3cr3t-t0ken-value"


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


def test_download_verifies_and_is_atomic(server, tmp_path):
    server.add("/AbdomenCTCT.zip", DATA)
    lines = []
    out = download(
        f"{server.url}/AbdomenCTCT.zip",
        tmp_path / "a.zip",
        md5=MD5,
        size=len(DATA),
        log=lines.append,
    )
    assert out.read_bytes() == DATA and not (tmp_path / "a.zip.part").exists()
    assert any("verified" in s for s in lines) and any(
        "% (" in s for s in lines
    )  # plain progress lines in logs
    # a second call finds the verified file and does not download again
    hits = len(server.files["/AbdomenCTCT.zip"].hits)
    download(f"{server.url}/AbdomenCTCT.zip", tmp_path / "a.zip", md5=MD5, log=lines.append)
    assert len(server.files["/AbdomenCTCT.zip"].hits) == hits


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    served = server.add("/big.bin", DATA, drop_after=200_000)
    download(
        f"{server.url}/big.bin", tmp_path / "big.bin", md5=MD5, backoff=0.01, log=lambda *_: None
    )
    assert (tmp_path / "big.bin").read_bytes() == DATA
    ranges = [r for r, _ in served.hits]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and int(ranges[1][6:-1]) >= 131_072
    assert served.hits[1][1] == 206


def test_a_part_left_by_a_killed_run_is_resumed_and_a_complete_part_finishes(server, tmp_path):
    served = server.add("/f.bin", DATA)
    (tmp_path / "f.bin.part").write_bytes(DATA[:300_000])
    download(f"{server.url}/f.bin", tmp_path / "f.bin", md5=MD5, log=lambda *_: None)
    assert (tmp_path / "f.bin").read_bytes() == DATA and served.hits == [("bytes=300000-", 206)]
    (tmp_path / "g.bin.part").write_bytes(DATA)
    server.add("/g.bin", DATA)
    download(
        f"{server.url}/g.bin", tmp_path / "g.bin", md5=MD5, size=len(DATA), log=lambda *_: None
    )
    assert (tmp_path / "g.bin").read_bytes() == DATA  # 416: the part already held everything


def test_server_that_ignores_range_restarts_cleanly(server, tmp_path):
    server.add("/h.bin", DATA, ignore_range=True)
    (tmp_path / "h.bin.part").write_bytes(b"garbage" * 1000)
    download(f"{server.url}/h.bin", tmp_path / "h.bin", md5=MD5, log=lambda *_: None)
    assert (tmp_path / "h.bin").read_bytes() == DATA


def test_checksum_mismatch_removes_the_file(server, tmp_path):
    server.add("/bad.zip", DATA, corrupt=True)
    with pytest.raises(DownloadError, match=r"bad.zip: checksum mismatch .* the file was removed"):
        download(f"{server.url}/bad.zip", tmp_path / "bad.zip", md5=MD5, log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_access_errors_are_one_clear_message_without_the_token(server, tmp_path):
    server.add("/restricted.npz", DATA, token=TOKEN)
    with pytest.raises(DownloadError, match=r"access not granted.*HTTP 403") as err:
        download(
            f"{server.url}/restricted.npz?token={TOKEN}",
            tmp_path / "r.npz",
            token="wrong-" + TOKEN,
            log=lambda *_: None,
        )
    assert TOKEN not in str(err.value)
    with pytest.raises(DownloadError, match=r"not found.*HTTP 404"):
        download(f"{server.url}/missing.npz", tmp_path / "m.npz", log=lambda *_: None)
    lines = []
    download(
        f"{server.url}/restricted.npz", tmp_path / "r.npz", token=TOKEN, md5=MD5, log=lines.append
    )
    assert (tmp_path / "r.npz").read_bytes() == DATA and not any(TOKEN in s for s in lines)


def test_unreachable_host_gives_up_after_retries(tmp_path):
    with pytest.raises(DownloadError, match=r"failed after 2 retries.*rerun to resume"):
        download(
            "http://127.0.0.1:9/x.zip",
            tmp_path / "x.zip",
            retries=2,
            backoff=0.01,
            timeout=2,
            log=lambda *_: None,
        )


def test_checksum_lock_records_the_first_download_and_guards_later_ones(server, tmp_path):
    server.add("/L.zip", DATA)
    lock = ChecksumLock(tmp_path / "checksums.lock.json")
    download(f"{server.url}/L.zip", tmp_path / "d1" / "L.zip", lock=lock, log=lambda *_: None)
    assert ChecksumLock(tmp_path / "checksums.lock.json").get("L.zip") == {
        "size": len(DATA),
        "md5": MD5,
    }
    server.files["/L.zip"].corrupt = True  # the host now serves different bytes
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(
            f"{server.url}/L.zip",
            tmp_path / "d2" / "L.zip",
            lock=ChecksumLock(lock.path),
            log=lambda *_: None,
        )


def test_zenodo_records_api_lists_files_with_md5(server):
    server.add_zenodo("6406114", "Summary_3630.csv", b"NoteAcc_DEID\ntrn00001\n")
    server.add_zenodo("6406114", "trn00001.npz", DATA, token=TOKEN)
    files = {f.name: f for f in zenodo_files("6406114", api=f"{server.url}/api")}
    assert set(files) == {"Summary_3630.csv", "trn00001.npz"}
    assert files["trn00001.npz"].md5 == MD5 and files["trn00001.npz"].size == len(DATA)
    assert files["trn00001.npz"].url.endswith("/api/records/6406114/files/trn00001.npz/content")
    with pytest.raises(DownloadError, match="HTTP 404"):
        zenodo_files("1", api=f"{server.url}/api")


def test_disk_full_is_one_message_and_keeps_the_part_for_resuming(server, tmp_path, monkeypatch):
    import errno

    from corereg.data import sources

    server.add("/full.bin", DATA)
    real_open = open

    class Full:
        def __init__(self, f):
            self.f, self.n = f, 0

        def write(self, b):
            if self.n > 100_000:
                raise OSError(errno.ENOSPC, "No space left on device")
            self.n += len(b)
            return self.f.write(b)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(sources, "open", lambda p, m="r": Full(real_open(p, m)), raising=False)
    with pytest.raises(
        DownloadError, match=r"full.bin: disk full while writing .* kept for resuming"
    ):
        download(f"{server.url}/full.bin", tmp_path / "full.bin", md5=MD5, log=lambda *_: None)
    assert (tmp_path / "full.bin.part").stat().st_size > 0 and not (tmp_path / "full.bin").exists()
    monkeypatch.undo()
    download(
        f"{server.url}/full.bin", tmp_path / "full.bin", md5=MD5, log=lambda *_: None
    )  # resumes
    assert (tmp_path / "full.bin").read_bytes() == DATA


def test_a_stale_part_larger_than_the_remote_file_is_discarded(server, tmp_path):
    served = server.add("/s.bin", DATA)
    (tmp_path / "s.bin.part").write_bytes(DATA + b"left over from another version")
    lock = ChecksumLock(tmp_path / "checksums.lock.json")
    lines = []
    download(f"{server.url}/s.bin", tmp_path / "s.bin", lock=lock, log=lines.append)
    assert (tmp_path / "s.bin").read_bytes() == DATA
    assert served.hits[0][1] == 416 and served.hits[1] == (None, 200)
    assert any("does not fit the remote file" in line for line in lines)
    assert ChecksumLock(lock.path).get("s.bin") == {"size": len(DATA), "md5": MD5}


def test_no_checksum_is_recorded_from_a_download_of_undeclared_size(server, tmp_path):
    server.add("/u.bin", DATA, no_length=True)
    lock = ChecksumLock(tmp_path / "checksums.lock.json")
    lines = []
    download(f"{server.url}/u.bin", tmp_path / "u.bin", lock=lock, log=lines.append)
    assert (tmp_path / "u.bin").read_bytes() == DATA
    assert ChecksumLock(lock.path).get("u.bin") is None
    assert any("declared no size" in line for line in lines)


def test_network_settings_come_from_the_source():
    from corereg.data.settings import SourceSettings
    from corereg.errors import CoreregError

    src = {"kind": "abdomenctct", "url": "u", "timeout": 5, "retries": 0}
    assert SourceSettings.of(src).network() == {"timeout": 5.0, "retries": 0, "backoff": 2.0}
    with pytest.raises(CoreregError, match=r"^source\.retries: -1 is less than the minimum"):
        SourceSettings.of({**src, "retries": -1})
    with pytest.raises(CoreregError, match=r"source: Additional properties.*'retry'"):
        SourceSettings.of({**src, "retry": 3})
