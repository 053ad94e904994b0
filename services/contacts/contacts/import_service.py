"""Import use cases of the API: an upload becomes a queued job (the file streamed into
stored chunks, never held whole in memory), jobs are read, listed and cancelled, and
their rejected/flagged rows downloaded as CSV. The worker runs the jobs
(``contacts.import_jobs``)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from tribune_shared.auth import Identity
from tribune_shared.errors import DomainError, NotFound, PayloadTooLarge, Refused
from tribune_shared.federations import FederationDirectory
from tribune_shared.ids import sortable_id
from tribune_shared.logging import current_correlation_id, get_logger, new_correlation_id
from tribune_shared.store import Store

from contacts.domain import InvalidFields, normalise_tag
from contacts.import_jobs import COUNTS, now_ms
from contacts.imports import (
    DELIMITER_NAMES,
    DELIMITERS,
    ENCODINGS,
    DuplicateRule,
    EncodingDetector,
    check_import_origin,
    check_mapping_usable,
    decode_sample,
    detect_delimiter,
    encode_csv,
    issues_csv_header,
    issues_csv_row,
    parse_mapping_items,
    rate,
    read_header,
    resolve_mapping,
)
from contacts.settings import IMPORT_FORM_BYTES, IMPORT_FORM_FIELDS_BYTES, ContactsSettings
from contacts.store import CustomFieldStore, ImportStore

log = get_logger(__name__)

#: options of an upload (query string, or multipart text fields)
OPTIONS = (
    "origin_kind",
    "origin_detail",
    "origin_collected_on",
    "federation_id",
    "duplicates",
    "delimiter",
    "encoding",
    "mapping",
    "tag",
    "filename",
)
RAW_TYPES = (
    "text/csv",
    "text/plain",
    "text/tab-separated-values",
    "application/csv",
    "application/octet-stream",
    "application/vnd.ms-excel",
)
_MAX_FIELDS_BYTES = IMPORT_FORM_FIELDS_BYTES
_DELIMITER_WORDS = {
    "comma": ",",
    "semicolon": ";",
    "tab": "\t",
    "\\t": "\t",
    **{d: d for d in DELIMITERS},
}


class UnsupportedMediaType(DomainError):
    status_code = 415
    code = "unsupported_media_type"


# ---------------------------------------------------------------- options


@dataclass
class UploadOptions:
    """An upload's options, checked."""

    origin: Any
    federation_id: str | None
    rule: DuplicateRule
    delimiter: str | None
    encoding: str | None
    mapping: dict[str, str]
    tags: tuple[str, ...]
    filename: str


def check_options(
    values: Mapping[str, list[str]], settings: ContactsSettings, today
) -> UploadOptions:
    """Every problem of an upload's options at once (422)."""
    problems: list[tuple[str, str]] = []
    for name in values:
        if name not in OPTIONS:
            problems.append((name, f"unknown option (one of {', '.join(OPTIONS)})"))

    def one(name: str) -> str | None:
        given = values.get(name) or []
        if len(given) > 1:
            problems.append((name, "given more than once"))
        return given[0] if given else None

    origin, origin_problems = check_import_origin(
        one("origin_kind"), one("origin_detail"), one("origin_collected_on"), today
    )
    problems += origin_problems
    rule_value = one("duplicates") or settings.import_duplicate_rule
    try:
        rule = DuplicateRule(rule_value)
    except ValueError:
        problems.append(("duplicates", "one of merge, skip, flag"))
        rule = DuplicateRule.merge
    delimiter = one("delimiter")
    if delimiter is not None:
        if delimiter.strip().lower() not in _DELIMITER_WORDS and delimiter not in DELIMITERS:
            problems.append(("delimiter", "one of comma, semicolon, tab"))
        else:
            delimiter = _DELIMITER_WORDS.get(delimiter.strip().lower(), delimiter)
    encoding = one("encoding")
    if encoding is not None:
        encoding = encoding.strip().lower().replace("_", "-")
        encoding = {"windows-1252": "cp1252", "latin1": "latin-1", "utf8": "utf-8"}.get(
            encoding, encoding
        )
        if encoding not in ENCODINGS:
            problems.append(("encoding", f"one of {', '.join(ENCODINGS)}"))
    mapping: dict[str, str] = {}
    for item in values.get("mapping") or []:
        if item.strip().startswith("{"):
            try:
                parsed = json.loads(item)
            except ValueError:
                parsed = None
            if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
            ):
                problems.append(("mapping", 'a JSON object {"column": "field"}'))
                continue
            mapping.update(parsed)
        else:
            items, item_problems = parse_mapping_items([item])
            mapping.update(items)
            problems += item_problems
    tags: list[str] = []
    for raw in values.get("tag") or []:
        try:
            tags.append(normalise_tag(raw, settings.max_tag_length))
        except ValueError as exc:
            problems.append(("tag", str(exc)))
    federation_id = one("federation_id")
    filename = (one("filename") or "").strip()[:255]
    if problems:
        raise InvalidFields(problems)
    return UploadOptions(
        origin=origin,
        federation_id=federation_id or None,
        rule=rule,
        delimiter=delimiter,
        encoding=encoding,
        mapping=mapping,
        tags=tuple(dict.fromkeys(tags)),
        filename=filename,
    )


# ---------------------------------------------------------------- streaming the body


class ChunkSink:
    """Writes an uploaded file into stored chunks as it arrives, keeping in memory at most
    one chunk and the sample used to read the header; counts and checks its size."""

    def __init__(
        self, imports: ImportStore, job_id: str, settings: ContactsSettings, expires_at: datetime
    ) -> None:
        self.imports = imports
        self.job_id = job_id
        self.settings = settings
        self.expires_at = expires_at
        self.buffer = bytearray()
        self.sample = bytearray()
        self.detector = EncodingDetector()
        self.size = 0
        self.chunks = 0

    async def write(self, data: bytes) -> None:
        if not data:
            return
        self.size += len(data)
        if self.size > self.settings.import_max_bytes:
            raise PayloadTooLarge(
                f"the file is larger than {self.settings.import_max_bytes} bytes",
                limit=self.settings.import_max_bytes,
            )
        self.detector.feed(data)
        room = self.settings.import_sample_bytes - len(self.sample)
        if room > 0:
            self.sample += data[:room]
        self.buffer += data
        size = self.settings.import_chunk_bytes
        while len(self.buffer) >= size:
            await self._put(bytes(self.buffer[:size]))
            del self.buffer[:size]

    async def close(self) -> None:
        if self.buffer:
            await self._put(bytes(self.buffer))
            self.buffer.clear()

    async def _put(self, data: bytes) -> None:
        await self.imports.put_chunk(self.job_id, self.chunks, data, self.expires_at)
        self.chunks += 1


@dataclass
class _Part:
    headers: dict[str, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class MultipartReader:
    """A streaming multipart/form-data reader: the file part's bytes are handed out as
    they are parsed; text fields (the options) are collected, bounded in size."""

    def __init__(self, boundary: bytes) -> None:
        self.fields: dict[str, list[str]] = {}
        self.filename: str | None = None
        self.file_parts = 0
        self.pending = bytearray()
        self._fields_size = 0
        self._part = _Part()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
                "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._end,
            },
        )

    def _begin(self) -> None:
        self._part = _Part()

    def _header_end(self) -> None:
        name = self._header_field.decode("latin-1").strip().lower()
        self._part.headers[name] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        # Raw bytes: browsers send UTF-8 file names as they are.
        _, params = parse_options_header(self._part.headers.get("content-disposition", b""))
        self._part.name = params.get(b"name", b"").decode("utf-8", "replace")
        filename = params.get(b"filename")
        self._part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        if self._is_file(self._part):
            self.file_parts += 1
            if self.file_parts > 1:
                raise InvalidFields([("file", "send one file per import")])
            self.filename = self._part.filename or ""

    @staticmethod
    def _is_file(part: _Part) -> bool:
        return part.filename is not None or part.name == "file"

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file(self._part):
            self.pending.extend(data[start:end])
            return
        self._fields_size += end - start
        if self._fields_size > _MAX_FIELDS_BYTES:
            raise InvalidFields([("form", f"the form fields exceed {_MAX_FIELDS_BYTES} bytes")])
        self._part.data.extend(data[start:end])

    def _end(self) -> None:
        if not self._is_file(self._part):
            value = self._part.data.decode("utf-8", "replace")
            self.fields.setdefault(self._part.name, []).append(value)

    def feed(self, chunk: bytes) -> bytes:
        """Parse a piece of the body; the file bytes it contained (422 if it is no
        multipart/form-data)."""
        with _malformed_form():
            self.parser.write(chunk)
        out = bytes(self.pending)
        self.pending.clear()
        return out

    def finish(self) -> bytes:
        with _malformed_form():
            self.parser.finalize()
        out = bytes(self.pending)
        self.pending.clear()
        return out


@contextlib.contextmanager
def _malformed_form() -> Iterator[None]:
    """The parser's refusal of a broken form as the client's error, not a 500."""
    try:
        yield
    except MultipartParseError as exc:
        raise InvalidFields([("body", f"not a valid multipart/form-data body: {exc}")]) from None


# ---------------------------------------------------------------- job views


def job_view(job: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """What the API shows of a job (progress with its rate while it runs)."""
    now = now or now_ms()
    progress = job.get("progress") or {}
    rows_done = progress.get("rows_done", 0)
    total = progress.get("total")
    run_started = progress.get("run_started_at")
    end = job.get("finished_at") or now
    elapsed = (end - run_started).total_seconds() if run_started else 0.0
    done_this_run = rows_done - progress.get("rows_at_run_start", 0)
    base = f"/api/v1/contacts/imports/{job['_id']}"
    return {
        "id": job["_id"],
        "status": job["status"],
        "federation_id": job["federation_id"],
        "created_at": job["created_at"],
        "created_by": job["created_by"],
        "started_at": job.get("started_at"),
        "finished_at": job.get("finished_at"),
        "file": {
            "name": job["file"].get("name") or "",
            "bytes": job["file"]["bytes"],
            "encoding": job["encoding"],
            "delimiter": DELIMITER_NAMES.get(job["delimiter"], job["delimiter"]),
        },
        "header": job["header"],
        "mapping": [{"column": m["header"], "field": m["target"]} for m in job["mapping"]],
        "unmapped_columns": job.get("unmapped") or [],
        "origin": job["origin"],
        "duplicates": job["rule"],
        "tags": job.get("tags") or [],
        "progress": {
            "rows_done": rows_done,
            "total": total,
            "percent": round(100 * rows_done / total, 1)
            if total
            else (100.0 if total == 0 else None),
            "rate_per_second": rate(done_this_run, elapsed),
            "elapsed_seconds": round(elapsed, 1),
        },
        "counts": {k: (job.get("counts") or {}).get(k, 0) for k in COUNTS},
        "cancel_requested": bool(job.get("cancel_requested")),
        "error": job.get("error"),
        "links": {
            "self": base,
            "rejected_csv": f"{base}/rejected.csv",
            "flagged_csv": f"{base}/flagged.csv",
            "cancel": f"{base}/cancel",
        },
    }


# ---------------------------------------------------------------- the use cases


class ImportsService:
    def __init__(self, settings: ContactsSettings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.imports = ImportStore(store)
        self.directory = FederationDirectory(store)
        self.custom_fields = CustomFieldStore(store)

    async def upload(
        self,
        identity: Identity,
        *,
        content_type: str | None,
        content_length: str | None,
        query: Mapping[str, list[str]],
        body: AsyncIterator[bytes],
    ) -> dict[str, Any]:
        """Stream the body into a new queued job; 413 beyond the size limit, 422 for bad
        options, an unreadable header or a mapping that does not fit the file."""
        kind, params = parse_options_header(content_type or "")
        kind_text = kind.decode("latin-1").lower()
        multipart = kind_text == "multipart/form-data"
        if not multipart and kind_text and kind_text not in RAW_TYPES:
            raise UnsupportedMediaType(
                f"send the CSV as the body (text/csv) or as multipart/form-data, not {kind_text}"
            )
        if multipart and not params.get(b"boundary"):
            raise InvalidFields([("content-type", "multipart/form-data needs a boundary")])
        limit = self.settings.import_max_bytes
        if content_length and content_length.isdigit():
            slack = IMPORT_FORM_BYTES if multipart else 0
            if int(content_length) > limit + slack:
                raise PayloadTooLarge(f"the file is larger than {limit} bytes", limit=limit)
        now = now_ms()
        options = None
        if not multipart:  # options come with the query string: check them before reading
            options = check_options(query, self.settings, now.date())
            await self.directory.resolve(identity, options.federation_id)
        job_id = sortable_id()
        expires_at = now + timedelta(days=self.settings.import_retention_days)
        sink = ChunkSink(self.imports, job_id, self.settings, expires_at)
        reader = MultipartReader(params[b"boundary"]) if multipart else None
        try:
            async for chunk in body:
                await sink.write(reader.feed(chunk) if reader else chunk)
            if reader is not None:
                await sink.write(reader.finish())
            await sink.close()
            if reader is not None:
                if reader.file_parts == 0:
                    raise InvalidFields([("file", "no file part in the form")])
                merged = {k: list(v) for k, v in query.items()}
                for name, values in reader.fields.items():
                    merged.setdefault(name, []).extend(values)
                options = check_options(merged, self.settings, now.date())
                if not options.filename:
                    options.filename = (reader.filename or "")[:255]
            assert options is not None
            job = await self._job(identity, job_id, sink, options, now, expires_at)
        except BaseException:
            await self.imports.drop_chunks(job_id)
            raise
        log.info("imports.queued", job_id=job_id, bytes=sink.size, chunks=sink.chunks)
        return job_view(job)

    async def _job(
        self,
        identity: Identity,
        job_id: str,
        sink: ChunkSink,
        options: UploadOptions,
        now: datetime,
        expires_at: datetime,
    ) -> dict[str, Any]:
        fed_id, fed_path = await self.directory.resolve(identity, options.federation_id)
        if sink.size == 0:
            raise InvalidFields([("file", "the file is empty")])
        encoding = options.encoding or sink.detector.result()
        sample = decode_sample(bytes(sink.sample), encoding)
        if sample.startswith("\ufeff"):
            sample = sample[1:]
        delimiter = options.delimiter or detect_delimiter(sample)
        whole = sink.size <= len(sink.sample)
        if not whole and "\n" not in sample and "\r" not in sample:
            raise InvalidFields(
                [("file", f"no line break in the first {len(sink.sample)} bytes: not a CSV file")]
            )
        header = read_header(sample, delimiter)
        if not header:
            raise InvalidFields([("file", "no header row (the first line names the columns)")])
        if len(header) > self.settings.import_max_columns:
            raise InvalidFields(
                [("file", f"{len(header)} columns; at most {self.settings.import_max_columns}")]
            )
        definitions = await self.custom_fields.applicable(fed_path)
        mapping = resolve_mapping(header, options.mapping, definitions)
        check_mapping_usable(mapping)
        job = {
            "_id": job_id,
            "source": "upload",
            "status": "queued",
            "federation_id": fed_id,
            "federation_path": fed_path,
            "created_by": identity.user_id,
            "created_by_email": identity.email,
            "created_at": now,
            "updated_at": now,
            "file": {"name": options.filename, "bytes": sink.size, "chunks": sink.chunks},
            "encoding": encoding,
            "delimiter": delimiter,
            "header": header,
            "mapping": mapping.as_list(),
            "unmapped": list(mapping.unmapped),
            "origin": options.origin.model_dump(mode="json"),
            "rule": options.rule.value,
            "tags": list(options.tags),
            "correlation_id": current_correlation_id() or new_correlation_id(),
            "progress": {"rows_done": 0, "total": None, "next_row": 0},
            "counts": dict.fromkeys(COUNTS, 0),
            "cancel_requested": False,
            "owner": None,
            "lease_until": None,
            "expires_at": expires_at,
        }
        await self.imports.insert_job(job)
        return job

    async def _visible(self, identity: Identity, job_id: str) -> dict[str, Any]:
        job = await self.imports.job(job_id, identity.scope())
        if job is None:
            raise NotFound("import not found")
        return job

    async def get(self, identity: Identity, job_id: str) -> dict[str, Any]:
        return job_view(await self._visible(identity, job_id))

    async def list_page(
        self, identity: Identity, *, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        jobs, more = await self.imports.jobs_page(identity.scope(), limit=limit, before=cursor)
        return [job_view(j) for j in jobs], (jobs[-1]["_id"] if more and jobs else None)

    async def cancel(self, identity: Identity, job_id: str) -> dict[str, Any]:
        """Stop a job: a queued one at once, a running one after its current batch (what
        was committed stays: contacts created so far are kept)."""
        job = await self._visible(identity, job_id)
        if job["status"] in ("done", "failed", "cancelled"):
            raise Refused(f"the import is already {job['status']}", status=job["status"])
        # In a transaction so that a write conflict with the batch being committed is
        # retried like any other.
        updated = await self.store.run_transaction(
            lambda session: self.imports.request_cancel(job_id, now_ms(), session),
            what="contacts.import_cancel",
        )
        job = updated or job
        if job["status"] == "cancelled":
            await self.imports.drop_chunks(job_id)
        return job_view(job)

    async def issues_csv(
        self, identity: Identity, job_id: str, kind: str
    ) -> tuple[str, AsyncIterator[bytes]]:
        """(file name, the CSV as UTF-8 with BOM, in row order) of a job's rejected or
        flagged rows: row number, reason (and the existing contact for flagged rows), then
        the row as it was in the file."""
        job = await self._visible(identity, job_id)
        flagged = kind == "flagged"
        header = job["header"]
        delimiter = job["delimiter"]

        async def lines() -> AsyncIterator[bytes]:
            yield (
                "\ufeff" + encode_csv([issues_csv_header(header, flagged=flagged)], delimiter)
            ).encode()
            batch: list[list[str]] = []
            async for doc in self.imports.issues(job_id, kind):
                batch.append(
                    issues_csv_row(
                        doc["row"],
                        doc["reason"],
                        doc.get("cells") or [],
                        len(header),
                        doc.get("contact_id"),
                        flagged=flagged,
                    )
                )
                if len(batch) >= 500:
                    yield encode_csv(batch, delimiter).encode()
                    batch = []
            if batch:
                yield encode_csv(batch, delimiter).encode()

        return f"import-{job_id}-{kind}.csv", lines()
