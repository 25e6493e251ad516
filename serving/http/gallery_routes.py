"""The gallery page: `/` searches and shows the chosen checkpoint and the adapters grouped by role and kind as
cards, `/versions/{id}` shows one version's card. Server-rendered with Jinja2 from the same functions the API
answers with (run_search, run_checkpoint_search, version_card), so the page never shows what `/v1` would not; a
little plain JavaScript copies `<lora:...>` tags. Bad input is answered with the page and the reason (4xx), never
a 500; the page is left out of OpenAPI (it is not the API)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError
from starlette.datastructures import QueryParams

from serving.catalogue import thumbnails, version_card
from serving.http.errors import ProblemError
from serving.http.schemas import HitOut, SearchResponse
from serving.http.search_routes import SearchParams, run_checkpoint_search, run_search
from serving.http.state import ServerState, server
from serving.search.live import IndexNotReady
from serving.search.requests import BadRequest, allowed_values
from serving.search.results import SearchResult

router = APIRouter(include_in_schema=False)
HERE = Path(__file__).parent
STATIC = {"gallery.css": "text/css", "gallery.js": "text/javascript"}
ROLES = (("content", "For your prompt"), ("enhancer", "Enhancers"))  # other roles go with content
TOP_K_CHOICES = (10, 20, 50, 100)
# Scripts and styles from this server only; example images come from the image host (Civitai's CDN or a mirror).
CSP = ("default-src 'self'; img-src 'self' http: https: data:; script-src 'self'; style-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


def http_url(value: str | None) -> str:
    """A link the page may carry: http(s) only (a crawled `javascript:` URL becomes no link)."""
    return value if value and urlsplit(value).scheme in ("http", "https") else ""


def _templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["http_url"] = http_url
    return Jinja2Templates(env=env)


templates = _templates()


def _render(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    return templates.TemplateResponse(request, name, {"root": request.scope.get("root_path", ""), **context},
                                      status_code=status, headers={"Content-Security-Policy": CSP})


def _params(query: QueryParams) -> dict:
    """The form's fields as SearchParams takes them (empty fields left out, repeatable ones as lists)."""
    params: dict = {key: query.getlist(key) for key in ("base_model", "type")}
    params = {key: [value for value in values if value] for key, values in params.items()}
    for key in ("q", "commercial_use", "max_content_level", "min_downloads", "top_k"):
        if query.get(key):
            params[key] = query[key]
    return params


def _version_id(value: str) -> int | None:
    """A version id as a URL gives it (ASCII digits, in range), else None."""
    return int(value) if value.isascii() and value.isdigit() and 0 < int(value) < 2**63 else None


def _checkpoint_id(value: str | None) -> int | None:
    """The `checkpoint` field (adapters for another checkpoint of the answer); BadRequest unless a version id."""
    if not value:
        return None
    version_id = _version_id(value)
    if version_id is None:
        raise BadRequest("checkpoint", "checkpoint must be a version id")
    return version_id


def _choose_url(query: QueryParams):
    """The link that keeps the search and its filters and picks another checkpoint for the adapters."""
    kept = [(key, value) for key, value in query.multi_items() if key != "checkpoint"]
    return lambda version_id: "?" + urlencode([*kept, ("checkpoint", str(version_id))])


def _errors(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, item['loc'])) or 'input'}: {item['msg']}" for item in error.errors()[:5])


def _groups(adapters: list[HitOut]) -> list[tuple[str, dict[str, list[HitOut]]]]:
    """The adapters by role (content first, then enhancers), each role's by kind in the engine's kind order."""
    known = {role for role, _ in ROLES}
    by_role = {role: [hit for hit in adapters if (hit.role if hit.role in known else "content") == role]
               for role, _ in ROLES}
    return [(label, SearchResult([], by_role[role]).adapters_by_kind) for role, label in ROLES if by_role[role]]


def _answer(state: ServerState, params: SearchParams, checkpoint: int | None) -> SearchResponse:
    """The search; with `checkpoint` (one of its checkpoints, or any served one) the adapters for that one."""
    answer = run_search(state, params)
    if checkpoint is None or (answer.adapters_for and answer.adapters_for.version_id == checkpoint):
        return answer
    chosen = run_checkpoint_search(state, checkpoint, params, params.q)
    return answer.model_copy(update={"adapters_for": chosen.adapters_for, "adapters": chosen.adapters,
                                     "negatives": chosen.negatives})


@router.get("/", response_class=HTMLResponse)
def gallery(request: Request, state: ServerState = Depends(server)) -> Response:
    """The search page: empty until a query is given, then the answer as cards."""
    raw = _params(request.query_params)
    context = {"form": raw, "allowed": {}, "answer": None, "groups": [], "thumbs": {}, "error": None,
               "allowed_error": None, "top_k_choices": TOP_K_CHOICES, "choose_url": _choose_url(request.query_params)}
    status = 200
    try:
        context["allowed"] = allowed_values(state.engine().index, state.settings)
        if raw.get("q"):
            params = SearchParams.model_validate({**raw, "checkpoints": 5})
            answer = _answer(state, params, _checkpoint_id(request.query_params.get("checkpoint")))
            hits = [*answer.checkpoints, *answer.adapters, *answer.negatives]
            context.update(answer=answer, groups=_groups(answer.adapters),
                           thumbs=thumbnails(state.retriever, state.settings, [hit.version_id for hit in hits]))
    except ValidationError as error:
        status, context["error"] = 422, _errors(error)
    except BadRequest as error:
        status, context["error"] = 422, str(error)
        context["allowed_error"] = {error.field: error.allowed} if error.allowed else None
    except ProblemError as error:
        status, context["error"] = error.status, error.detail
    except IndexNotReady as error:
        status, context["error"] = 503, f"the search index is not ready: {error}"
    return _render(request, "gallery.html", status, **context)


@router.get("/versions/{version_id}", response_class=HTMLResponse)
def version_page(request: Request, version_id: str, state: ServerState = Depends(server)) -> Response:
    """One served version's card: description, trigger words, weight and tag, files and hashes, licence, example
    images with their prompts, and what it is used with (each linked to its own page)."""
    card, number = None, _version_id(version_id)
    if number is not None:
        try:
            card = version_card(state.retriever, state.settings, number)
        except IndexNotReady as error:
            return _render(request, "message.html", 503, title="Not ready", message=f"The search index is not "
                           f"ready: {error}")
    if card is None:
        return _render(request, "message.html", 404, title="Not found", message=f"Version {version_id} is not "
                       "served by this zoo (unknown, NSFW, deleted, or above the server's content level).")
    return _render(request, "version.html", card=card)


@router.get("/static/{name}")
def static(name: str) -> Response:
    """The page's stylesheet and script (a fixed list: nothing else under the folder is reachable)."""
    if name not in STATIC:
        raise ProblemError(404, f"no static file {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name], headers={"Cache-Control": "max-age=3600"})
