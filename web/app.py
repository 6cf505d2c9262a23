"""The approval web: signed links land here; plan, report and form pages; phone-friendly.

Each page family is a router in its own module; `ROUTERS` lists them. Stateless: any number of
these processes can run behind a load balancer.
"""

from __future__ import annotations

import importlib

from fastapi import FastAPI
from fastapi.responses import JSONResponse

# Router modules: each exposes `router` (fastapi.APIRouter).
ROUTERS: list[str] = ["web.incidents", "web.reports", "web.approvals", "web.inspection"]


def create_app() -> FastAPI:
    app = FastAPI(title="aftercare", docs_url=None, redoc_url=None)

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    for name in ROUTERS:
        app.include_router(importlib.import_module(name).router)
    return app


app = create_app()
