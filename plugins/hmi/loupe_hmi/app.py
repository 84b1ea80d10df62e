"""The operator screen's HTTP side: pages, JSON API (OpenAPI at /openapi.json), server-sent
events, Prometheus metrics and health probes, on FastAPI, in the screen's own process.

Every action goes through the station's control handle (``child.StationProxy``: a pipe to the
station's process); none runs an inspection in this process. Image endpoints take an integer result id and serve only frames
the screen holds (the newest and the failures gallery): there is no path to traverse.
All text that came from images or files is sent as JSON and put on the page with
``textContent``, never as markup.
"""
from __future__ import annotations

import asyncio
import json
import time
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from host import StationActionError

from .auth import RANK, Auth
from .metrics import Metrics

COOKIE = "loupe_session"


class Who(BaseModel):
    user: str | None = None
    role: Literal["viewer", "operator", "engineer"] = "viewer"
    csrf: str | None = None


class LoginBody(BaseModel):
    user: str = Field(max_length=128)
    password: str = Field(max_length=1024)


class JobBody(BaseModel):
    job: str = Field(max_length=64)


class AckBody(BaseModel):
    result_id: int | None = None


def build_app(control, hub, params, secrets_file: Path | None, title: str) -> FastAPI:
    auth = Auth(secrets_file, params.public_view)
    metrics = Metrics(control, hub)
    app = FastAPI(title=f"Loupe station {title}", version="1",
                  description="The operator screen and HTTP API of a Loupe station (`loupe serve`).")

    # ------------------------------------------------------------ identity

    def who(request: Request) -> Who:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("bearer "):
            found = auth.bearer(header[7:].strip())
            if found is None:
                raise HTTPException(401, "unknown token")
            return Who(user=found[0], role=found[1])
        s = auth.session(request.cookies.get(COOKIE))
        if s is not None:
            return Who(user=s.user, role=s.role, csrf=s.csrf)
        return Who()

    def viewer(request: Request, me: Who = Depends(who)) -> Who:
        if me.user is None and not params.public_view:
            raise HTTPException(401, "log in to see this station")
        return me

    def needs(role: str):
        def check(request: Request, me: Who = Depends(who)) -> Who:
            if me.user is None:
                raise HTTPException(401, f"log in as {role} to do this")
            if RANK[me.role] < RANK[role]:
                raise HTTPException(403, f"needs the {role} role; you are {me.role}")
            if me.csrf is not None and request.headers.get("x-csrf-token") != me.csrf:
                raise HTTPException(403, "missing or wrong X-CSRF-Token")
            return me
        return check

    def act(fn, *args) -> dict[str, Any]:
        try:
            out = fn(*args)
        except StationActionError as exc:
            raise HTTPException(409, {"code": exc.code, "message": str(exc)}) from None
        return {"ok": True, "state": control.state, "job": control.job, **({"result_id": out} if out else {})}

    # --------------------------------------------------------------- pages

    page = files("loupe_hmi").joinpath("static/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                           "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; "
                                           "frame-ancestors 'none'", "X-Content-Type-Options": "nosniff",
                                           "Cache-Control": "no-store"})

    # ------------------------------------------------------------- session

    @app.post("/api/login", summary="Log in with a password; sets the session cookie")
    def login(body: LoginBody, response: Response) -> Who:
        got = auth.login(body.user, body.password)
        if got is None:
            time.sleep(0.2)
            raise HTTPException(401, "wrong user or password")
        sid, s = got
        response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", max_age=int(auth.session_s), path="/")
        return Who(user=s.user, role=s.role, csrf=s.csrf)

    @app.post("/api/logout", summary="End the session")
    def logout(request: Request, response: Response) -> dict[str, bool]:
        auth.logout(request.cookies.get(COOKIE))
        response.delete_cookie(COOKIE, path="/")
        return {"ok": True}

    @app.get("/api/me", summary="Who the caller is (role viewer when not logged in)")
    def me(request: Request) -> dict[str, Any]:
        m = who(request)
        return {**m.model_dump(), "public_view": params.public_view}

    # ---------------------------------------------------------- read-only

    def state_doc() -> dict[str, Any]:
        st = control.status()
        with hub.lock:
            st["shift"] = {"since": hub.shift_start, "label": hub.shift_label(), "counts": dict(hub.shift_counts)}
            st["latest_id"] = hub.latest_id
            st["failures"] = list(reversed(hub.failed_ids))
            st["alarm_log"] = list(hub.alarm_log)[:20]
        c = st["counts"]
        judged = sum(c.values())
        st["yield"] = round(c.get("pass", 0) / judged, 4) if judged else None
        return st

    @app.get("/api/state", summary="The station's state, job, counters, buffer, alarms and adapters")
    def get_state(_: Who = Depends(viewer)) -> dict[str, Any]:
        return state_doc()

    @app.get("/api/jobs/{job}", summary="A job's recipe: steps and their limits")
    def get_job(job: str, _: Who = Depends(viewer)) -> dict[str, Any]:
        try:
            return control.describe_job(job)
        except StationActionError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/api/results/last", summary="The newest result")
    def last(_: Who = Depends(viewer)) -> dict[str, Any]:
        items = hub.query(None, None, 1, None)
        if not items:
            raise HTTPException(404, "no result yet")
        return items[0]

    @app.get("/api/results", summary="Query the results the screen holds (newest first)")
    def results(verdict: Literal["pass", "review", "fail", "error"] | None = None, job: str | None = None,
                limit: int = Query(50, ge=1, le=1000), before: int | None = None,
                _: Who = Depends(viewer)) -> list[dict[str, Any]]:
        return hub.query(verdict, job, limit, before)

    @app.get("/api/results/{result_id}/image.jpg", summary="A held result's image (heatmaps blended in)",
             responses={200: {"content": {"image/jpeg": {}}}})
    def image(result_id: int, _: Who = Depends(viewer)) -> Response:
        got = hub.jpeg(result_id)
        if got is None:
            raise HTTPException(404, "no image held for this result")
        return Response(got[0], media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/results/{result_id}/overlays", summary="A held result's overlays, in image pixels")
    def overlays(result_id: int, _: Who = Depends(viewer)) -> dict[str, Any]:
        shapes = hub.overlays(result_id)
        got = hub.jpeg(result_id)
        if shapes is None or got is None:
            raise HTTPException(404, "no frame held for this result")
        return {"width": got[1], "height": got[2], "shapes": shapes}

    @app.get("/events", summary="Server-sent events: the newest result, the state, new alarms")
    async def events(request: Request, _: Who = Depends(viewer)) -> StreamingResponse:
        """Each browser's stream looks at the screen's news every ``push_s``: the newest result (a fast
        line's intermediate results are skipped here, never dropped: they are counted and stored),
        the state when something changed (else once a second), and every new alarm. So the work per
        browser is bounded whatever the line's rate."""

        async def stream():
            sent_id, sent_image, sent_version, sent_alarm, last_status = None, None, -1, hub.alarm_seq, 0.0
            while not hub.closing and not await request.is_disconnected():
                with hub.lock:
                    latest, version, alarm_seq = hub.latest, hub.version, hub.alarm_seq
                    image_id = hub.latest_frame_id
                    alarms = [a for a in hub.alarm_log if a["seq"] > sent_alarm] if alarm_seq > sent_alarm else []
                now = time.monotonic()
                if version != sent_version or now - last_status >= 0.5:
                    sent_version, last_status = version, now
                    doc = await asyncio.to_thread(state_doc)  # a call to the station's process
                    yield f"event: status\ndata: {json.dumps(doc)}\n\n"
                if latest is not None and latest.id != sent_id:
                    sent_id = latest.id
                    # image_id: the newest frame held (a fast line hands over at most live_fps frames a second)
                    msg = {'result': latest.json(), 'image_id': image_id, 'sent': time.time()}
                    yield f"event: result\ndata: {json.dumps(msg)}\n\n"
                    sent_image = image_id
                elif image_id != sent_image:  # the newest result's frame came after it
                    sent_image = image_id
                    yield f"event: image\ndata: {json.dumps({'image_id': image_id})}\n\n"
                for a in reversed(alarms):
                    yield f"event: alarm\ndata: {json.dumps({'alarm': a})}\n\n"
                sent_alarm = alarm_seq
                await asyncio.sleep(params.push_s)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --------------------------------------------------------------- actions

    @app.post("/api/trigger", summary="Software trigger (operator)")
    def trigger(_: Who = Depends(needs("operator"))) -> dict[str, Any]:
        return act(control.trigger)

    @app.post("/api/acknowledge", summary="Acknowledge a result (operator); the oldest when no id")
    def acknowledge(body: AckBody, _: Who = Depends(needs("operator"))) -> dict[str, Any]:
        return act(control.acknowledge, body.result_id)

    @app.post("/api/counters/reset", summary="Zero the counters (operator)")
    def reset_counters(_: Who = Depends(needs("operator"))) -> dict[str, Any]:
        hub.reset_shift()
        return act(control.reset_counters)

    @app.post("/api/job", summary="Change job (engineer)")
    def select_job(body: JobBody, _: Who = Depends(needs("engineer"))) -> dict[str, Any]:
        return act(control.select_job, body.job)

    @app.post("/api/reset", summary="Reset the station out of Error (engineer)")
    def reset(_: Who = Depends(needs("engineer"))) -> dict[str, Any]:
        return act(control.reset)

    @app.post("/api/reload", summary="Re-read and validate the job recipes (engineer)")
    def reload(_: Who = Depends(needs("engineer"))) -> dict[str, Any]:
        return act(control.reload)

    # -------------------------------------------------------- plant IT

    @app.get("/healthz", summary="Liveness: the server answers")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the station can take triggers or runs continuously")
    def readyz() -> JSONResponse:
        state = control.state
        ok = state in ("Ready", "SingleExecution", "ContinuousExecution")
        return JSONResponse({"status": "ready" if ok else "not ready", "state": state}, status_code=200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics (text exposition format)", response_class=PlainTextResponse)
    def get_metrics(request: Request) -> Response:
        if not params.metrics_public:
            viewer(request, who(request))
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    return app
