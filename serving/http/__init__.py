"""`zoo serve`: the HTTP API over the warm search engine and the studio (FastAPI; OpenAPI at /docs).

    from serving.http import create_app
    app = create_app(Settings.from_env())     # uvicorn serving.http.app:app_from_env --factory
"""

from serving.http.app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
