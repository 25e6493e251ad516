"""Running a queued studio job in this process: read its inputs from studio_jobs, generate or edit with the warm
studio, store the PNG (with its A1111 parameters) and the sidecar, or the error in one line. A failed job is
raised again so the queue records it as failed too."""

from __future__ import annotations

import io
import logging

from PIL import Image

from db.jobs import finish_job, job_inputs
from serving.studio.generate import full_sidecar
from serving.studio.png_info import encode_png

log = logging.getLogger(__name__)


def run_job(db, studio, job_id: str) -> None:
    with db.begin() as conn:
        inputs = job_inputs(conn, job_id)
    if inputs is None:  # deleted meanwhile
        return
    try:
        result, sidecar = _run(studio, inputs)
        png, sidecar = encode_png(result.image, result.parameters_text), full_sidecar(result, sidecar)
    except Exception as error:
        with db.begin() as conn:
            finish_job(conn, job_id, error=one_line(error))
        log.info("studio job %s failed: %s", job_id, one_line(error))
        raise
    with db.begin() as conn:
        finish_job(conn, job_id, png=png, sidecar=sidecar)


def _run(studio, inputs: dict):
    request = dict(inputs["request"])
    if inputs["kind"] == "generate":
        adapters = request.pop("adapters", None)
        pairs = [(item["version_id"], item["weight"]) for item in adapters] if adapters is not None else None
        return studio.generate(request.pop("prompt"), adapters=pairs, **request)
    image = Image.open(io.BytesIO(inputs["input_image"])).convert("RGB")
    reference = (Image.open(io.BytesIO(inputs["reference_image"])).convert("RGB")
                 if inputs["reference_image"] else None)
    return studio.edit(image, request.pop("instruction"), reference=reference, **request)


def one_line(error: BaseException) -> str:
    """The error's kind and first line (what a job's status shows): no traceback, no paths beyond the message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else 'failed'}"[:500]
