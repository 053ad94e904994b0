"""Upload handling without I/O: the streaming multipart reader, the chunk sink (with a fake
store), the upload options and the job view."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta

import pytest
from contacts.domain import InvalidFields
from contacts.import_service import ChunkSink, MultipartReader, check_options, job_view
from contacts.settings import ContactsSettings
from tribune_shared.errors import PayloadTooLarge

BOUNDARY = b"----tribune1234"


def multipart(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += b"--" + BOUNDARY + b"\r\n"
        out += f"Content-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: text/csv\r\n"
        out += b"\r\n" + data + b"\r\n"
    return out + b"--" + BOUNDARY + b"--\r\n"


@pytest.mark.parametrize("piece", [1, 7, 64, 10_000])
def test_the_multipart_reader_hands_out_the_file_as_it_streams(piece):
    csv_bytes = "Prénom;Nom\r\nÉloïse;Lefèvre\r\n".encode("cp1252") * 50
    body = multipart(
        ("origin_kind", None, b"petition"),
        ("file", "adhérents.csv", csv_bytes),
        ("mapping", None, b"Nom=family_name"),
        ("mapping", None, b"Pr\xc3\xa9nom=given_name"),
    )
    reader = MultipartReader(BOUNDARY)
    got = b""
    biggest = 0
    for i in range(0, len(body), piece):
        out = reader.feed(body[i : i + piece])
        biggest = max(biggest, len(out))
        got += out
    got += reader.finish()
    assert got == csv_bytes
    # nothing is accumulated beyond what came in (but the boundary's look-ahead)
    assert biggest <= piece + len(BOUNDARY) + 8
    assert reader.filename == "adhérents.csv"
    assert reader.fields == {
        "origin_kind": ["petition"],
        "mapping": ["Nom=family_name", "Prénom=given_name"],
    }


def test_the_multipart_reader_refuses_two_files_and_huge_fields():
    reader = MultipartReader(BOUNDARY)
    with pytest.raises(InvalidFields):
        reader.feed(multipart(("file", "a.csv", b"x"), ("other", "b.csv", b"y")))
    reader = MultipartReader(BOUNDARY)
    with pytest.raises(InvalidFields):
        reader.feed(multipart(("notes", None, b"x" * 70_000)))


def test_a_broken_form_is_the_clients_error_not_a_500():
    # found by the fuzzer (tests/e2e/test_fuzz.py): a part without headers
    reader = MultipartReader(BOUNDARY)
    with pytest.raises(InvalidFields) as exc:
        reader.feed(b"--" + BOUNDARY + b"\r\nTrue--" + BOUNDARY + b"--\r\n")
        reader.finish()
    assert exc.value.problems[0][0] == "body"


class FakeImports:
    def __init__(self):
        self.chunks: dict[int, bytes] = {}

    async def put_chunk(self, job_id, n, data, expires_at):
        self.chunks[n] = data


def test_the_sink_writes_bounded_chunks_keeps_a_sample_and_enforces_the_limit(monkeypatch):
    monkeypatch.setenv("CONTACTS_IMPORT_CHUNK_BYTES", "4096")
    monkeypatch.setenv("CONTACTS_IMPORT_SAMPLE_BYTES", "1024")
    monkeypatch.setenv("CONTACTS_IMPORT_MAX_BYTES", "10000")
    settings = ContactsSettings()
    fake = FakeImports()
    sink = ChunkSink(fake, "j" * 32, settings, datetime.now(UTC))
    data = ("é" * 2_000).encode()  # 4000 bytes, UTF-8

    async def go():
        for i in range(0, len(data), 333):
            await sink.write(data[i : i + 333])
        await sink.write(data)  # 8000 bytes in all
        await sink.close()
        with pytest.raises(PayloadTooLarge):
            await sink.write(b"x" * 2001)

    asyncio.run(go())
    assert [len(c) for c in fake.chunks.values()] == [4096, 3904]
    assert b"".join(fake.chunks.values()) == data + data
    assert len(sink.sample) == 1024 and sink.detector.result() == "utf-8"
    assert sink.size == 8000 + 2001 and sink.chunks == 2


def test_upload_options_are_checked_all_at_once():
    settings = ContactsSettings()
    today = date(2026, 1, 1)
    options = check_options(
        {
            "origin_kind": ["rented_file"],
            "origin_detail": ["fichier loué"],
            "duplicates": ["flag"],
            "delimiter": ["semicolon"],
            "encoding": ["Windows-1252"],
            "mapping": ["Nom=family_name", '{"Tél": "phone"}'],
            "tag": ["Import 2026", "import 2026"],
        },
        settings,
        today,
    )
    assert options.rule.value == "flag" and options.delimiter == ";"
    assert options.encoding == "cp1252"
    assert options.mapping == {"Nom": "family_name", "Tél": "phone"}
    assert options.tags == ("import 2026",)
    with pytest.raises(InvalidFields) as exc:
        check_options(
            {
                "origin_kind": ["petition", "event"],
                "duplicates": ["maybe"],
                "encoding": ["ebcdic"],
                "mapping": ["{not json"],
                "tag": [""],
                "colour": ["blue"],
            },
            settings,
            today,
        )
    assert {f for f, _ in exc.value.problems} == {
        "origin_kind",
        "origin_detail",
        "duplicates",
        "encoding",
        "mapping",
        "tag",
        "colour",
    }


def test_the_job_view_shows_progress_and_rate():
    start = datetime(2026, 1, 1, tzinfo=UTC)
    job = {
        "_id": "a" * 32,
        "status": "running",
        "federation_id": "paris",
        "created_at": start,
        "created_by": "u",
        "file": {"name": "f.csv", "bytes": 10, "chunks": 1},
        "encoding": "cp1252",
        "delimiter": ";",
        "header": ["nom"],
        "mapping": [{"index": 0, "header": "nom", "target": "family_name"}],
        "origin": {"kind": "petition", "detail": "x", "collected_on": None},
        "rule": "merge",
        "progress": {
            "rows_done": 3000,
            "total": 12000,
            "run_started_at": start,
            "rows_at_run_start": 1000,
        },
        "counts": {"created": 2900, "rejected": 100},
    }
    view = job_view(job, now=start + timedelta(seconds=10))
    assert view["progress"] == {
        "rows_done": 3000,
        "total": 12000,
        "percent": 25.0,
        "rate_per_second": 200.0,  # this run: 2000 rows in 10 s
        "elapsed_seconds": 10.0,
    }
    assert view["file"]["delimiter"] == "semicolon"
    assert view["counts"]["created"] == 2900 and view["counts"]["flagged"] == 0
    assert view["links"]["rejected_csv"].endswith("/rejected.csv")
