"""The approval web: signed links land here; plan, report and form pages; phone-friendly.

Each page family is a router in its own module; `ROUTERS` lists them. Stateless: any number of
these processes can run behind a load balancer. Every response carries the security headers of
`web.pages`; no OpenAPI schema or docs pages are served (this is a site for people, not an API).
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from web import (
    admin,
    approvals,
    board,
    complaints,
    devices,
    drill,
    incidents,
    inspection,
    kpi,
    reports,
    staff,
    store,
)
from web.busy import BusyRetry
from web.pages import STATIC, SecurityHeaders

# The page families, each a module with its `router` (fastapi.APIRouter).
ROUTERS: list[APIRouter] = [
    staff.router,
    devices.router,
    store.router,
    board.router,
    incidents.router,
    reports.router,
    approvals.router,
    inspection.router,
    kpi.router,
    complaints.router,
    drill.router,
]


def create_app() -> FastAPI:
    app = FastAPI(title="aftercare", openapi_url=None, docs_url=None, redoc_url=None)
    # a busy database re-runs the whole request, then answers "系统繁忙" (503), never a bare 500;
    # added first, so that the security headers wrap its page too
    app.add_middleware(BusyRetry)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        # every browser asks for it: a 404 here is an error in the console of every page a person opens
        return Response(status_code=204)

    staff.install(app)  # not logged in: to the login page; no role: a 403 page
    for router in ROUTERS:
        app.include_router(router)
    admin.mount(app)  # the back office at /admin (sqladmin), behind the staff login
    return app


app = create_app()
