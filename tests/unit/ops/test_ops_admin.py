"""The admin commands (`tribune users|federations|import`) without a platform: bad usage
and missing settings exit 2 before anything is sent, an unreachable gateway exits 1, the
gateway's error bodies become messages naming the field, the operator's password is sent
again only when the gateway asks for it, and what the tables and documents show."""

from __future__ import annotations

import json

import httpx
import pytest
from rich.console import Console
from tribune_ops import admin_render as render
from tribune_ops.admin import import_options
from tribune_ops.cli import app
from tribune_ops.gateway_client import AdminSettings, Gateway, error_of, rejected_rows
from typer.testing import CliRunner

runner = CliRunner()


@pytest.fixture(autouse=True)
def nobody_listening(monkeypatch):
    """A gateway nobody listens at, and an administrator's account."""
    monkeypatch.setenv("TRIBUNE_OPS_GATEWAY_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("TRIBUNE_OPS_ADMIN_EMAIL", "admin@tribune.local")
    monkeypatch.setenv("TRIBUNE_OPS_ADMIN_PASSWORD", "admin-password")
    monkeypatch.setenv("TRIBUNE_OPS_GATEWAY_TIMEOUT_SECONDS", "2")
    monkeypatch.delenv("TRIBUNE_OPS_API_KEY", raising=False)


def text_of(renderable) -> str:
    console = Console(record=True, width=200)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize(
    "args",
    [
        ["users", "list", "--role", "emperor"],
        ["users", "create", "x@example.org", "--role", "admin", "--json"],  # no password
        ["users", "create", "x@example.org", "--role", "admin", "--generate", "--password-stdin"],
        ["users", "create", "x@example.org"],  # no role
        ["users", "set-role", "u1", "emperor"],
        ["federations", "move", "paris"],  # no --parent
        ["import", "missing.csv", "-f", "paris", "--origin-kind", "petition"],
        ["users", "list", "--limit", "0"],
    ],
)
def test_bad_usage_exits_2_before_calling_the_gateway(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_an_empty_file_is_not_uploaded(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = runner.invoke(
        app, ["import", str(empty), "-f", "paris", "--origin-kind", "petition", "--json"]
    )
    assert result.exit_code == 2
    assert "empty" in json.loads(result.stdout)["error"]


def test_without_an_account_the_settings_say_what_to_set(monkeypatch):
    monkeypatch.delenv("TRIBUNE_OPS_ADMIN_EMAIL")
    result = runner.invoke(app, ["users", "list", "--json"])
    assert result.exit_code == 2
    assert "TRIBUNE_OPS_ADMIN_EMAIL" in json.loads(result.stdout)["error"]


def test_without_a_password_and_no_terminal_the_settings_say_what_to_set(monkeypatch):
    monkeypatch.delenv("TRIBUNE_OPS_ADMIN_PASSWORD")
    result = runner.invoke(app, ["federations", "list", "--json"])
    assert result.exit_code == 2
    assert "TRIBUNE_OPS_ADMIN_PASSWORD" in json.loads(result.stdout)["error"]


def test_a_bad_setting_is_named(monkeypatch):
    monkeypatch.setenv("TRIBUNE_OPS_GATEWAY_TIMEOUT_SECONDS", "0")
    result = runner.invoke(app, ["users", "list", "--json"])
    assert result.exit_code == 2
    assert "TRIBUNE_OPS_GATEWAY_TIMEOUT_SECONDS" in json.loads(result.stdout)["error"]


@pytest.mark.parametrize(
    "args",
    [
        ["users", "list", "--json"],
        ["federations", "list", "--json"],
        ["users", "deactivate", "someone@example.org", "--json"],
    ],
)
def test_an_unreachable_gateway_exits_1_with_one_json_document(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["error"].startswith("gateway unreachable") and document["exit_code"] == 1


def test_an_import_with_an_api_key_does_not_log_in(monkeypatch, tmp_path):
    monkeypatch.delenv("TRIBUNE_OPS_ADMIN_EMAIL")
    monkeypatch.setenv("TRIBUNE_OPS_API_KEY", "trk_abc_" + "x" * 43)
    data = tmp_path / "people.csv"
    data.write_text("nom;email\nDupont;a@example.org\n")
    result = runner.invoke(
        app, ["import", str(data), "-f", "paris", "--origin-kind", "petition", "--json"]
    )
    # no account needed: it got as far as the upload
    assert result.exit_code == 1
    assert json.loads(result.stdout)["error"].startswith("gateway unreachable")


# ---------------------------------------------------------------- the gateway's answers


def test_a_validation_error_names_each_field():
    error = error_of(
        422,
        {
            "error": "validation_error",
            "detail": [
                {"field": "password", "reason": "at least 12 characters"},
                {"field": "email", "reason": "not an email"},
            ],
        },
        "",
    )
    assert error.field == "password"
    assert str(error) == "422: password: at least 12 characters; email: not an email"


def test_a_conflict_names_the_existing_object():
    error = error_of(
        409, {"error": "conflict", "detail": "already exists", "existing_id": "f1"}, ""
    )
    assert error.message == "already exists (existing: f1)"
    error = error_of(
        409,
        {
            "error": "conflict",
            "detail": [{"field": "name", "reason": "taken"}],
            "existing_id": "f1",
        },
        "",
    )
    assert error.message == "name: taken (existing: f1)" and error.field == "name"


def test_a_body_that_is_not_json_still_gives_a_message():
    assert error_of(502, None, "Bad Gateway").message == "Bad Gateway"
    assert error_of(503, None, "").message == "HTTP 503"


def gateway_answering(answers: list[httpx.Response], seen: list[httpx.Request]) -> Gateway:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    settings = AdminSettings(admin_email="admin@tribune.local", gateway_url="http://gw.test")
    return Gateway(settings, password="my-own-password", transport=httpx.MockTransport(handler))


async def test_the_operators_password_is_sent_again_only_when_the_gateway_asks():
    seen: list[httpx.Request] = []
    asks = httpx.Response(
        422,
        json={
            "error": "validation_error",
            "detail": [{"field": "confirm_password", "reason": "required to grant the DPO role"}],
        },
    )
    user = {"id": "u1", "email": "dpo@example.org", "role": "dpo"}
    gateway = gateway_answering([asks, httpx.Response(201, json=user)], seen)
    assert await gateway.create_user("dpo@example.org", "new-long-password", "dpo", None) == user
    first, second = (json.loads(r.content) for r in seen)
    assert "confirm_password" not in first
    assert second["confirm_password"] == "my-own-password"

    seen.clear()
    gateway = gateway_answering([httpx.Response(200, json=user)], seen)
    await gateway.change_user("u1", role="viewer")
    assert len(seen) == 1 and "confirm_password" not in json.loads(seen[0].content)


async def test_another_refusal_is_not_retried():
    seen: list[httpx.Request] = []
    refused = httpx.Response(403, json={"error": "forbidden", "detail": "above your role"})
    gateway = gateway_answering([refused], seen)
    with pytest.raises(Exception, match="above your role"):
        await gateway.change_user("u1", role="admin")
    assert len(seen) == 1


async def test_a_user_named_by_email_is_found_exactly():
    seen: list[httpx.Request] = []
    page = {
        "items": [
            {"id": "u1", "email": "anna.b@example.org"},
            {"id": "u2", "email": "Anna@example.org"},
        ],
        "next_cursor": None,
    }
    gateway = gateway_answering([httpx.Response(200, json=page)], seen)
    assert (await gateway.user("anna@example.org"))["id"] == "u2"
    assert seen[0].url.params["q"] == "anna@example.org"


async def test_a_federation_named_twice_must_be_named_by_id():
    seen: list[httpx.Request] = []
    tree = [
        {"id": "r", "name": "National", "path": "/r/", "parent_id": None},
        {"id": "a", "name": "Centre", "path": "/r/a/", "parent_id": "r"},
        {"id": "b", "name": "centre", "path": "/r/b/", "parent_id": "r"},
    ]
    gateway = gateway_answering([httpx.Response(200, json=tree)] * 3, seen)
    assert (await gateway.federation("national"))["id"] == "r"
    assert (await gateway.federation("b"))["id"] == "b"
    with pytest.raises(Exception, match="2 federations are named"):
        await gateway.federation("Centre")


# ---------------------------------------------------------------- imports


def test_the_upload_parameters_carry_every_option_once_or_repeated():
    params = import_options(
        "f1", "petition", "gare du Nord", "2026-11-02", ["Portable=phone", "X=ignore"],
        "flag", "semicolon", None, ["rentrée", "gare"],
    )  # fmt: skip
    assert params == [
        ("federation_id", "f1"),
        ("origin_kind", "petition"),
        ("origin_detail", "gare du Nord"),
        ("origin_collected_on", "2026-11-02"),
        ("duplicates", "flag"),
        ("delimiter", "semicolon"),
        ("mapping", "Portable=phone"),
        ("mapping", "X=ignore"),
        ("tag", "rentrée"),
        ("tag", "gare"),
    ]


def test_rejected_rows_are_read_from_the_csv_the_api_serves():
    text = (
        "\ufeffrow;reason;nom;email\r\n"
        "3;email: not an email;Dupont;nope\r\n"
        "'=4;'=cmd: formula;\"a;b\";x\r\n"
        "7;family_name: required;;c@example.org\r\n"
    )
    assert rejected_rows(text, 2) == [
        {"row": "3", "reason": "email: not an email"},
        {"row": "=4", "reason": "=cmd: formula"},
    ]
    assert len(rejected_rows(text, 10)) == 3
    assert rejected_rows("\ufeff", 5) == []


def test_the_import_summary_lists_rejected_rows_and_where_the_rest_is():
    job = {
        "id": "j1",
        "status": "done",
        "progress": {"rows_done": 3},
        "counts": {"created": 1, "rejected": 2, "flagged": 1},
        "links": {
            "self": "/api/v1/contacts/imports/j1",
            "rejected_csv": "/api/v1/contacts/imports/j1/rejected.csv",
            "flagged_csv": "/api/v1/contacts/imports/j1/flagged.csv",
        },
    }
    lines = render.import_lines(job, [{"row": "3", "reason": "email: not an email"}])
    assert lines[0].startswith("import j1: done, 3 rows; created 1,")
    assert "  row 3: email: not an email" in lines
    assert any("1 more rejected rows" in line and "rejected.csv" in line for line in lines)
    assert any("flagged.csv" in line for line in lines)
    document = render.import_document(job, [{"row": "3", "reason": "x"}])
    assert document["rejected_rows"] == [{"row": "3", "reason": "x"}]


def test_the_federation_tree_nests_each_under_its_parent():
    tree = [
        {"id": "p11", "name": "Paris 11e", "path": "/r/p/p11/", "parent_id": "p"},
        {"id": "r", "name": "National", "path": "/r/", "parent_id": None},
        {"id": "p", "name": "Paris", "path": "/r/p/", "parent_id": "r"},
        {"id": "l", "name": "Lyon", "path": "/r/l/", "parent_id": "r"},
    ]
    shown = text_of(render.federation_tree(tree))
    lines = [line.rstrip() for line in shown.splitlines() if line.strip()]
    assert lines[0].startswith("National")
    paris = next(i for i, line in enumerate(lines) if "Paris  p" in line)
    assert "Paris 11e" in lines[paris + 1]
    assert lines[paris + 1].index("Paris 11e") > lines[paris].index("Paris")


def test_the_users_table_names_federations_and_inactive_accounts():
    users = [
        {
            "id": "u1",
            "email": "anna@paris.test",
            "role": "secretary",
            "federation_id": "p",
            "active": False,
            "created_at": "2026-12-01T10:00:00Z",
        }
    ]
    shown = text_of(render.users_table(users, {"p": "Paris"}))
    assert "anna@paris.test" in shown and "Paris" in shown and " no " in shown
    assert render.user_document(users[0], {"p": "Paris"})["federation_name"] == "Paris"


# ---------------------------------------------------------------- 503: nothing applied


def not_yet(seconds: str | None = "0.1") -> httpx.Response:
    headers = {"Retry-After": seconds} if seconds is not None else {}
    return httpx.Response(
        503, json={"error": "not_applied_yet", "detail": "retry shortly"}, headers=headers
    )


async def test_a_503_with_retry_after_is_tried_again():
    seen: list[httpx.Request] = []
    tree = [{"id": "r", "name": "National", "path": "/r/", "parent_id": None}]
    gateway = gateway_answering([not_yet(), not_yet(), httpx.Response(200, json=tree)], seen)
    assert await gateway.federations() == tree
    assert len(seen) == 3


async def test_a_503_without_retry_after_or_past_the_budget_is_an_error():
    seen: list[httpx.Request] = []
    gateway = gateway_answering([not_yet(None)], seen)
    with pytest.raises(Exception, match="503: retry shortly"):
        await gateway.federations()
    assert len(seen) == 1
    seen.clear()
    gateway = gateway_answering([not_yet("120")], seen)  # longer than the 30 s budget
    with pytest.raises(Exception, match="503"):
        await gateway.federations()
    assert len(seen) == 1


async def test_an_upload_refused_with_503_is_sent_again_whole(tmp_path):
    data = tmp_path / "people.csv"
    data.write_bytes(b"nom;email\n" + b"Dupont;a@example.org\n" * 20_000)
    seen: list[httpx.Request] = []
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        bodies.append(request.read())
        if len(seen) == 1:
            return not_yet()
        return httpx.Response(202, json={"id": "j1", "status": "queued"})

    settings = AdminSettings(admin_email="a@b.c", gateway_url="http://gw.test")
    gateway = Gateway(settings, password="p", transport=httpx.MockTransport(handler))
    progress: list[int] = []
    size = data.stat().st_size
    job = await gateway.upload(data, size, [("origin_kind", "petition")], progress.append)
    assert job["id"] == "j1"
    assert bodies[0] == bodies[1] == data.read_bytes()
    assert seen[1].headers["content-length"] == str(size)
    assert seen[1].url.params.get_list("filename") == ["people.csv"]
    assert sum(progress) == size  # the bar started over, it did not count twice
