"""HTTP route of form submissions: the list of a form's submissions (back office)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from tribune_shared.auth import CurrentIdentity, Role, require_roles

from contacts.submissions.service import SubmissionsService

router = APIRouter(prefix="/api/v1/forms", tags=["forms"])

FormId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_-]+$")]
may_read = require_roles(Role.secretary, Role.campaign_manager, Role.dpo)


async def submissions(request: Request) -> SubmissionsService:
    service = getattr(request.app.state, "submissions_service", None)
    if service is None:  # built on first use: the app's startup belongs to contacts.main
        service = SubmissionsService(request.app.state.settings, request.app.state.store)
        request.app.state.submissions_service = service
    return service


Submissions = Annotated[SubmissionsService, Depends(submissions)]


@router.get("/{form_id}/submissions", dependencies=[may_read])
async def list_submissions(
    form_id: FormId,
    svc: Submissions,
    identity: CurrentIdentity,
    status: Annotated[Literal["queued", "applied", "rejected"] | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
    limit: Annotated[int | None, Query(ge=1, description="at most TRIBUNE_MAX_PAGE_SIZE")] = None,
) -> dict[str, Any]:
    """The form's submissions, newest first: the person's id once applied, whether the
    submission created them or repeated an earlier one (counted once), the boxes ticked
    with their text versions, when; ``signatures`` is the form's counter. 404 for a form
    outside the caller's subtree."""
    return await svc.page(identity, form_id, status=status, cursor=cursor, limit=limit)
