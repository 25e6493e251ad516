"""The catalogue over HTTP: version and model cards, file lookups by hash or name, and `/v1/inspect` (what an
image's A1111 parameters used, resolved to the zoo's versions). Unknown, NSFW, deleted or unserved ids are 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Path, Query, UploadFile

from serving.catalogue import inspect_parameters, lookup_file, lookup_hash, model_card, version_card
from serving.catalogue.inspect import MAX_PARAMETERS_CHARS, png_parameters
from serving.http.errors import ProblemError, responses
from serving.http.schemas import Inspection, LookupResponse, ModelCard, VersionCard
from serving.http.state import ServerState, server
from serving.http.uploads import upload_bytes

router = APIRouter(prefix="/v1", tags=["catalogue"])
ID = Path(ge=1, le=2**63 - 1)
NOT_SERVED = "{} {} is not served by this zoo (unknown, NSFW, deleted, or above the server's content level)"


@router.get("/versions/{version_id}", response_model=VersionCard, responses=responses(404, 422, 503))
def version(version_id: Annotated[int, ID], state: ServerState = Depends(server)) -> VersionCard:
    """A served version's card: description, trigger words, recommended weight, files with every hash kind,
    licence, SFW example images with their prompts, what it is most used with, role and content level."""
    card = version_card(state.retriever, state.settings, version_id)
    if card is None:
        raise ProblemError(404, NOT_SERVED.format("version", version_id))
    return VersionCard(**card)


@router.get("/models/{model_id}", response_model=ModelCard, responses=responses(404, 422, 503))
def model(model_id: Annotated[int, ID], state: ServerState = Depends(server)) -> ModelCard:
    """A served model: its served versions and the card of the newest."""
    card = model_card(state.retriever, state.settings, model_id)
    if card is None:
        raise ProblemError(404, NOT_SERVED.format("model", model_id))
    return ModelCard(**card)


@router.get("/lookup", response_model=LookupResponse, responses=responses(404, 422, 503))
def lookup(hash: Annotated[str | None, Query(max_length=128, description="any hash kind, any case")] = None,
           file: Annotated[str | None, Query(max_length=1024, description="a file name, e.g. x.safetensors")] = None,
           state: ServerState = Depends(server)) -> LookupResponse:
    """The served versions holding a file: by AutoV1/AutoV2/AutoV3/SHA256/CRC32/BLAKE3 hash, or by file name."""
    if (hash is None) == (file is None):
        raise ProblemError(422, "give exactly one of hash or file")
    try:
        matches = (lookup_hash(state.retriever, state.settings, hash) if hash is not None
                   else lookup_file(state.retriever, state.settings, file))
    except ValueError as error:
        raise ProblemError(422, str(error)) from error
    if not matches:
        raise ProblemError(404, f"no served version has a file with this {'hash' if hash is not None else 'name'}")
    return LookupResponse(hash=hash, file=file, matches=matches)


@router.post("/inspect", response_model=Inspection, responses=responses(400, 413, 422, 503))
def inspect(image: UploadFile | None = File(None, description="a PNG with A1111 'parameters'"),
            parameters: Annotated[str | None, Form(max_length=MAX_PARAMETERS_CHARS,
                                                   description="or the parameters text itself")] = None,
            state: ServerState = Depends(server)) -> Inspection:
    """The checkpoint, LoRAs and embeddings an image was made with, each resolved to a zoo version."""
    data = upload_bytes(image)
    if (data is None) == (parameters is None):
        raise ProblemError(422, "give exactly one of image (a PNG) or parameters (its text)")
    try:
        text = png_parameters(data) if data is not None else parameters
        return Inspection(**inspect_parameters(state.retriever, state.settings, text))
    except ValueError as error:
        raise ProblemError(422, str(error)) from error
