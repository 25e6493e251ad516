"""`POST /v1/generate` and `POST /v1/edit` queue a studio job (202 + its URL); `GET /v1/jobs/{id}` answers its
status and sidecar, `GET /v1/jobs/{id}/image` its PNG, from any server process (db/jobs.py). 503 (with the reason)
when this server cannot run the studio; 401 without the token when ZOO_API_TOKEN is set."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from db.jobs import create_job, finish_job, job_image, job_status, purge_finished, set_queue_job, status_name
from serving.http.errors import ProblemError, responses
from serving.http.schemas import GenerateRequest, JobStatus
from serving.http.security import require_token
from serving.http.state import ServerState, server
from serving.http.uploads import decode_image, png_bytes, upload_bytes
from serving.studio.catalogue import StudioError
from serving.studio.schedulers import SCHEDULERS

router = APIRouter(prefix="/v1", tags=["studio"])
JOB_ID = Path(pattern=r"^[0-9a-f]{32}$", description="a job id as /v1/generate or /v1/edit answered it")


def _check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise ProblemError(422, f"unknown scheduler {name!r}", allowed={"scheduler": sorted(SCHEDULERS)})


def _check_text(**fields: str | None) -> None:
    for field, value in fields.items():
        if value and "\x00" in value:
            raise ProblemError(422, f"{field} holds a NUL character")


def _check_given(studio, request: GenerateRequest) -> None:
    """The given checkpoint and adapters are served versions of the right types (else 422 before queueing)."""
    adapters = [(item.version_id, item.weight) for item in request.adapters] if request.adapters is not None else None
    try:
        studio.catalogue.given(request.checkpoint_version_id, adapters)
    except StudioError as error:
        raise ProblemError(422, str(error)) from error


def _status(request: Request, row: dict) -> JobStatus:
    status = status_name(row)
    base = f"/v1/jobs/{row['id']}"
    return JobStatus(id=row["id"], kind=row["kind"], status=status, created_at=row["created_at"],
                     started_at=row["started_at"], finished_at=row["finished_at"], error=row["error"],
                     request=row["request"], sidecar=row["sidecar"], status_url=base,
                     image_url=f"{base}/image" if status == "succeeded" else None)


async def _queue(state: ServerState, request: Request, kind: str, parameters: dict, image: bytes | None = None,
                 reference: bytes | None = None) -> JSONResponse:
    """Record the job, queue it, and answer 202 with its status and URL."""
    job_id = secrets.token_hex(16)

    def record() -> None:
        with state.db.begin() as conn:
            purge_finished(conn)
            create_job(conn, job_id, kind, parameters, image, reference)

    await run_in_threadpool(record)
    try:
        queue_id = await state.queue.defer(job_id)
    except Exception as error:
        await run_in_threadpool(_failed, state, job_id, f"the job could not be queued: {error}")
        raise ProblemError(503, "the job queue is not available; try again") from error
    row = await run_in_threadpool(_queued, state, job_id, queue_id)
    body = _status(request, row)
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers={"Location": body.status_url})


def _failed(state: ServerState, job_id: str, error: str) -> None:
    with state.db.begin() as conn:
        finish_job(conn, job_id, error=error)


def _queued(state: ServerState, job_id: str, queue_id: int) -> dict:
    with state.db.begin() as conn:
        set_queue_job(conn, job_id, queue_id)
        return job_status(conn, job_id)


ACCEPTED = {202: {"model": JobStatus, "description": "queued: poll the Location (status_url)"}}


@router.post("/generate", status_code=202, response_model=JobStatus, dependencies=[Depends(require_token)],
             responses={**ACCEPTED, **responses(400, 401, 413, 422, 503)})
async def generate(body: GenerateRequest, request: Request, state: ServerState = Depends(server)) -> JSONResponse:
    """Queue an image for a prompt: the checkpoint and adapters retrieved for it (or the ones given)."""
    studio = state.need_studio()
    _check_scheduler(body.scheduler)
    _check_text(prompt=body.prompt, negative_prompt=body.negative_prompt)
    await run_in_threadpool(_check_given, studio, body)
    return await _queue(state, request, "generate", body.model_dump(mode="json"))


@router.post("/edit", status_code=202, response_model=JobStatus, dependencies=[Depends(require_token)],
             responses={**ACCEPTED, **responses(400, 401, 413, 422, 503)})
async def edit(request: Request, image: Annotated[UploadFile, File(description="the image to edit")],
               instruction: Annotated[str, Form(min_length=1, max_length=4000)],
               reference: UploadFile | None = File(None, description="a style reference image"),
               negative_prompt: Annotated[str, Form(max_length=4000)] = "",
               steps: Annotated[int, Form(ge=1, le=100)] = 25, seed: Annotated[int, Form(ge=-1, le=2**32 - 1)] = -1,
               cfg: Annotated[float, Form(ge=0.0, le=30.0)] = 7.0, scheduler: Annotated[str, Form()] = "dpm++_2m_karras",
               strength: Annotated[float | None, Form(gt=0.0, le=1.0)] = None,
               state: ServerState = Depends(server)) -> JSONResponse:
    """Queue an edit of an uploaded image as the instruction says (the output keeps the input's size)."""
    state.need_studio()
    _check_scheduler(scheduler)
    _check_text(instruction=instruction, negative_prompt=negative_prompt)
    data, ref = await run_in_threadpool(upload_bytes, image), await run_in_threadpool(upload_bytes, reference)
    if data is None:
        raise ProblemError(422, "image: an image to edit is needed")
    pixels = png_bytes(decode_image(data, "image"))
    ref_pixels = png_bytes(decode_image(ref, "reference")) if ref is not None else None
    parameters = {"instruction": instruction, "negative_prompt": negative_prompt, "steps": steps, "seed": seed,
                  "cfg": cfg, "scheduler": scheduler, "strength": strength}
    return await _queue(state, request, "edit", parameters, pixels, ref_pixels)


@router.get("/jobs/{job_id}", response_model=JobStatus, responses=responses(404, 422))
def job(job_id: Annotated[str, JOB_ID], request: Request, state: ServerState = Depends(server)) -> JobStatus:
    """A job's status, its request, and once done its sidecar (model and version ids, prompts) or its error."""
    with state.db.connect() as conn:
        row = job_status(conn, job_id)
    if row is None:
        raise ProblemError(404, f"no job {job_id}")
    return _status(request, row)


@router.get("/jobs/{job_id}/image", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "the PNG, with its A1111 parameters"},
    **responses(404, 409, 422)})
def job_png(job_id: Annotated[str, JOB_ID], state: ServerState = Depends(server)) -> Response:
    """The job's PNG (A1111 `parameters` text included); 409 while it is not done."""
    with state.db.connect() as conn:
        row = job_status(conn, job_id)
        data = job_image(conn, job_id) if row is not None else None
    if row is None:
        raise ProblemError(404, f"no job {job_id}")
    if data is None:
        raise ProblemError(409, f"job {job_id} is {status_name(row)}: it has no image")
    return Response(content=data, media_type="image/png")
