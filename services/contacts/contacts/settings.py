from __future__ import annotations

from typing import ClassVar, Literal

import phonenumbers
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict
from tribune_shared.auth import Role
from tribune_shared.settings import DEV_SECRET, MIN_SECRET_LENGTH, ServiceSettings

from contacts.filter_language import FilterLimits

#: an import upload's form fields (multipart: origin, mapping, tags...) together, at most
IMPORT_FORM_FIELDS_BYTES = 64 * 1024
#: what an import upload's body holds beside its file: those fields and the multipart framing
IMPORT_FORM_BYTES = IMPORT_FORM_FIELDS_BYTES + 16 * 1024


class ContactsSettings(ServiceSettings):
    service_name = "contacts"
    model_config = SettingsConfigDict(env_prefix="CONTACTS_", extra="ignore")
    secret_fields: ClassVar[tuple[str, ...]] = (
        *ServiceSettings.secret_fields,
        "suppression_salt",
    )
    #: salts the suppression list's hashes (TRIBUNE_SUPPRESSION_SALT, as in consent)
    suppression_salt: str = DEV_SECRET

    http_port: int = Field(default=8101, ge=1, le=65535)
    worker_port: int = Field(default=8201, ge=1, le=65535)

    #: region used to read phone numbers written without a country code, and postcodes
    default_region: str = Field(default="FR", min_length=2, max_length=2)
    default_page_size: int = Field(default=50, ge=1, le=10_000)
    max_name_length: int = Field(default=100, ge=1, le=1_000)
    max_tags: int = Field(default=50, ge=0, le=1_000)
    max_tag_length: int = Field(default=40, ge=1, le=200)
    max_search_words: int = Field(default=5, ge=1, le=20)

    # The full contact
    max_emails: int = Field(default=10, ge=1, le=100)
    max_phones: int = Field(default=10, ge=1, le=100)
    max_address_lines: int = Field(default=4, ge=1, le=10)
    max_address_line_length: int = Field(default=200, ge=10, le=1_000)
    max_code_length: int = Field(
        default=32, ge=5, le=200, description="constituency and polling station codes"
    )
    min_birth_year: int = Field(default=1900, ge=1800, le=2100)

    # Custom fields (defined per federation; a child sees its ancestors' definitions)
    max_custom_fields: int = Field(
        default=100, ge=0, le=1_000, description="definitions per federation"
    )
    max_custom_field_choices: int = Field(default=100, ge=1, le=1_000)
    max_custom_text_length: int = Field(default=500, ge=1, le=500)

    # Segments and the filter language (contacts.filter_language)
    segment_max_depth: int = Field(default=10, ge=1, le=50)
    segment_max_nodes: int = Field(default=200, ge=1, le=5_000)
    segment_max_values: int = Field(
        default=1_000, ge=1, le=50_000, description="items of one list of a filter"
    )
    segment_max_text_length: int = Field(
        default=500, ge=1, le=10_000, description="characters of one text of a filter"
    )
    segment_preview_default_size: int = Field(default=10, ge=0, le=100)
    segment_preview_max_size: int = Field(default=50, ge=0, le=500)
    max_segments_per_federation: int = Field(default=500, ge=1, le=100_000)

    # Export (CSV)
    export_roles: list[Role] = Field(
        default_factory=lambda: [Role.admin, Role.secretary],
        description='roles that may export contacts (JSON list, e.g. ["admin","secretary"])',
    )
    export_max_rows: int = Field(default=200_000, ge=1, le=10_000_000)
    export_batch_size: int = Field(default=1_000, ge=1, le=50_000)
    # Bulk reads (contacts.bulk_reads): more than this per user and window is an export
    # (recorded in the export trail for export roles, 429 for the others)
    bulk_read_window_seconds: int = Field(default=3_600, ge=60, le=7 * 86_400)
    bulk_read_max_pages: int = Field(
        default=100, ge=1, le=1_000_000, description="list pages and previews with a sample"
    )
    bulk_read_max_contacts: int = Field(
        default=1_000, ge=1, le=100_000_000, description="contacts returned, single reads too"
    )
    # The local pre-budget (contacts.bulk_reads): reads a process gathers before it adds
    # them to the store's counter, a share of each limit, or after this many seconds
    bulk_read_sync_share: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="share of a limit a process counts locally before telling the store "
        "(with R processes a user may pass a limit by R x this before being refused)",
    )
    bulk_read_sync_seconds: float = Field(
        default=5, ge=0, le=3600, description="a process tells the store at least this often"
    )

    # What each role sees (contacts.field_view): these roles see contact details (emails,
    # phones, address, birth year, custom fields); the others get the restricted view
    contact_details_roles: list[Role] = Field(
        default_factory=lambda: [
            Role.admin,
            Role.secretary,
            Role.treasurer,
            Role.campaign_manager,
            Role.dpo,
        ],
        description='JSON list, e.g. ["admin","secretary"]; viewer is left out by default',
    )

    # CSV import (contacts.import_jobs), duplicates and merges (contacts.merge_service)
    import_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=1024, le=2**31, description="uploaded file; 413 beyond"
    )
    import_chunk_bytes: int = Field(
        default=1024 * 1024, ge=4096, le=8 * 1024 * 1024, description="stored chunks of a file"
    )
    import_sample_bytes: int = Field(
        default=64 * 1024, ge=1024, le=1024 * 1024, description="read to find header/delimiter"
    )
    import_batch_size: int = Field(
        default=250, ge=1, le=5_000, description="rows written (with their events) per batch"
    )
    import_max_columns: int = Field(default=200, ge=1, le=2_000)
    # A row beyond these bounds is rejected with the reason and the import goes on: what
    # one row costs to read and check stays bounded whatever the file holds. The row
    # bound stays within csv's own field size limit (131072) so that one never fires.
    import_max_cell_chars: int = Field(
        default=4_096, ge=64, le=131_072, description="characters of one cell"
    )
    import_max_row_chars: int = Field(
        default=65_536,
        ge=1_024,
        le=131_072,
        description="characters of one row (its quoted line breaks included)",
    )
    import_duplicate_rule: Literal["merge", "skip", "flag"] = "merge"
    import_poll_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    import_lease_seconds: float = Field(default=120, ge=5, le=3600)
    import_retention_days: float = Field(
        default=30, gt=0, le=3650, description="jobs and their rejected/flagged rows"
    )
    import_key_cache_max_contacts: int = Field(
        default=1_000_000,
        ge=0,
        le=50_000_000,
        description="federations up to this size are deduplicated from an in-memory map",
    )
    import_temp_dir: str | None = Field(default=None, description="the worker's spool directory")
    # Campaign audiences (contacts.audiences): contacts selected per transaction (their
    # events are one packed outbox row), how often the worker looks for new campaigns, and
    # how long a job stays with a worker that stopped renewing it.
    audience_page_size: int = Field(
        default=500, ge=1, le=10_000, description="recipients selected per transaction"
    )
    audience_poll_interval_seconds: float = Field(default=0.5, gt=0, le=60)
    audience_lease_seconds: float = Field(default=60, ge=5, le=3600)
    # Meetings and canvassing sessions (contacts.meetings)
    meeting_max_title_length: int = Field(default=200, ge=1, le=1_000)
    meeting_max_place_length: int = Field(
        default=500, ge=1, le=5_000, description="characters of the place's address"
    )
    meeting_max_duration_hours: int = Field(default=7 * 24, ge=1, le=90 * 24)
    meeting_max_capacity: int = Field(default=100_000, ge=1, le=10_000_000)
    meeting_page_max_size: int = Field(
        default=200, ge=1, le=1_000, description="meetings or registrations per page"
    )
    meeting_history_max: int = Field(
        default=500, ge=1, le=10_000, description="a person's meetings listed (most recent)"
    )
    meeting_reminder_hours: list[int] = Field(
        default_factory=lambda: [24],
        min_length=0,
        max_length=10,
        description="hours before the start a registered person is reminded (JSON list)",
    )
    meeting_reminder_purpose: str = Field(
        default="news",
        min_length=1,
        max_length=64,
        description="the consent purpose a meeting reminder needs (messaging checks it)",
    )
    meeting_reminder_interval_seconds: float = Field(
        default=60, gt=0, le=3_600, description="how often the worker looks for due reminders"
    )
    meeting_reminder_batch_size: int = Field(
        default=500, ge=1, le=10_000, description="reminders (markers and events) per transaction"
    )
    duplicate_name_threshold: float = Field(default=88, ge=50, le=100)
    duplicate_max_scanned: int = Field(default=20_000, ge=100, le=1_000_000)
    duplicate_max_block: int = Field(default=1_000, ge=10, le=20_000)
    duplicate_default_limit: int = Field(default=50, ge=1, le=1_000)

    # Public forms (contacts.forms): definitions, the public page and its intake
    forms_max_fields: int = Field(default=30, ge=1, le=200, description="fields of one form")
    forms_max_consents: int = Field(default=10, ge=0, le=50, description="consent boxes")
    forms_max_origins: int = Field(default=20, ge=0, le=200, description="allowed_origins")
    forms_max_text_chars: int = Field(
        default=5_000, ge=100, le=50_000, description="intro and thank-you texts"
    )
    forms_max_answer_chars: int = Field(
        default=500, ge=10, le=5_000, description="one text answer of a custom field"
    )
    forms_max_choices: int = Field(default=50, ge=1, le=500, description="of a choice field")
    #: signs the page tokens (issued-at, proof-of-work challenge); derived from
    #: identity_secret when unset (a distinct key: HMAC with its own label)
    forms_token_secret: SecretStr | None = None
    forms_token_ttl_seconds: int = Field(
        default=86_400, ge=60, le=30 * 86_400, description="a page older than this is reloaded"
    )
    forms_min_fill_seconds: float = Field(
        default=3, ge=0, le=600, description="a form sent sooner after the page is refused"
    )
    forms_submission_max_bytes: int = Field(
        default=16 * 1024, ge=1024, le=64 * 1024, description="body of a submission; 413 beyond"
    )
    # Token buckets in each API process (per replica, see the README): refill per second
    # and burst
    forms_ip_rate_per_second: float = Field(default=0.2, gt=0, le=1_000)
    forms_ip_burst: int = Field(default=10, ge=1, le=10_000)
    forms_form_rate_per_second: float = Field(default=2_000, gt=0, le=1_000_000)
    forms_form_burst: int = Field(default=4_000, ge=1, le=10_000_000)
    forms_rate_max_keys: int = Field(
        default=100_000, ge=100, le=10_000_000, description="buckets kept (least recent dropped)"
    )
    # Proof of work (per form, optional): leading zero bits of SHA-256 the browser finds;
    # a form opts in with its own proof_of_work_bits, within these bounds
    forms_pow_min_bits: int = Field(default=8, ge=1, le=32)
    forms_pow_max_bits: int = Field(default=24, ge=1, le=32)
    # Intake: concurrent submissions share one transaction (tribune_shared.group_commit)
    forms_commit_max_batch: int = Field(default=500, ge=1, le=10_000)
    forms_commit_interval_seconds: float = Field(default=0.0, ge=0, le=1)
    # Load shedding: a burst beyond what this process stores in time is answered at once
    # (429 + Retry-After, the page says when to try again) instead of queueing for minutes
    # until the gateway's upstream timeout turns it into an accidental 5xx. Below the
    # gateway's GATEWAY_UPSTREAM_MAX_CONNECTIONS (200): the intake sheds before the
    # gateway's own queue for a connection fills
    forms_intake_max_in_flight: int = Field(
        default=150,
        ge=1,
        le=1_000_000,
        description="submissions being taken at once by one API process; 429 beyond",
    )
    forms_intake_retry_after_seconds: int = Field(
        default=5, ge=1, le=3_600, description="Retry-After of a submission shed as 'busy'"
    )
    forms_cache_seconds: float = Field(
        default=2, ge=0, le=300, description="a form and its texts kept by the public side"
    )
    forms_counter_cache_seconds: float = Field(default=2, ge=0, le=300)

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        value = value.upper()
        if value not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown region {value!r} (ISO 3166-1 alpha-2 expected)")
        return value

    @field_validator("meeting_reminder_hours")
    @classmethod
    def _reminder_hours(cls, value: list[int]) -> list[int]:
        if any(not 1 <= h <= 24 * 60 for h in value):
            raise ValueError("each reminder offset must be between 1 and 1440 hours")
        return sorted(set(value))

    @model_validator(mode="after")
    def _page_sizes(self) -> ContactsSettings:
        if self.default_page_size > self.max_page_size:
            raise ValueError("default_page_size must not exceed max_page_size")
        if self.segment_preview_default_size > self.segment_preview_max_size:
            raise ValueError(
                "segment_preview_default_size must not exceed segment_preview_max_size"
            )
        if self.import_max_cell_chars > self.import_max_row_chars:
            raise ValueError("import_max_cell_chars must not exceed import_max_row_chars")
        if self.forms_pow_min_bits > self.forms_pow_max_bits:
            raise ValueError("forms_pow_min_bits must not exceed forms_pow_max_bits")
        secret = self.forms_token_secret
        if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
            # optional (derived from identity_secret when unset), so not in secret_fields
            raise ValueError(
                f"{self.env_names('forms_token_secret')}: at least {MIN_SECRET_LENGTH} characters"
            )
        if self.forms_submission_max_bytes > self.max_body_bytes:
            raise ValueError("forms_submission_max_bytes must not exceed max_body_bytes")
        if self.import_sample_bytes > self.import_max_row_chars:
            # The header is read from the sample at upload: it must fit in a row.
            raise ValueError("import_sample_bytes must not exceed import_max_row_chars")
        return self

    @property
    def import_max_body_bytes(self) -> int:
        """The body limit of the import upload route (tribune_shared.limits): the file and,
        sent as a form, its fields and framing."""
        return self.import_max_bytes + IMPORT_FORM_BYTES

    @property
    def filter_limits(self) -> FilterLimits:
        return FilterLimits(
            max_depth=self.segment_max_depth,
            max_nodes=self.segment_max_nodes,
            max_values=self.segment_max_values,
            max_text_length=self.segment_max_text_length,
        )
