"""The goals HTTP API: goal configuration, conversion statistics and achievements, per account.

Every route under ``/api/v1`` acts for the account named by the caller's bearer token
(:mod:`goalworker.auth`) and sees nothing of other accounts. Goal rules are those of
:mod:`goalworker.goals`, the ones the worker applies. A goal change is committed to PostgreSQL,
whose ``goals`` trigger notifies the running workers; they reload their goals on it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any
from urllib.parse import quote
from uuid import UUID

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException

from goalworker import storage
from goalworker.api_bodies import (
    AchievementPage,
    Goal,
    GoalChange,
    GoalCreate,
    GoalPage,
    Problem,
    WorkflowStats,
)
from goalworker.auth import Principal, TokenVerifier
from goalworker.errors import GoalworkerError, InvalidGoal, InvalidToken, StaleVersion
from goalworker.goals import parse_goal_type, validate_criteria
from goalworker.settings import Settings

log = logging.getLogger(__name__)

#: Default and largest page size of the list routes; a larger ``limit`` is refused (422).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
#: Deepest ``offset`` accepted; past it a list should be narrowed rather than paged through.
MAX_OFFSET = 1_000_000
#: How long ``/readyz`` waits for PostgreSQL to answer, in seconds.
READY_TIMEOUT_SECONDS = 2.0

# -- errors ----------------------------------------------------------------------------------


class ApiError(GoalworkerError):
    """A refusal answered with its status and a :class:`Problem` body."""

    def __init__(self, status_code: int, error: str, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.status_code = status_code
        self.problem = Problem(error=error, message=f"{field}: {rule}", field=field, rule=rule)


def _problem(
    status_code: int, problem: Problem, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        problem.model_dump(exclude_none=True), status_code=status_code, headers=headers
    )


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    """A validation error's location as the client names it: ``criteria.form_id``, ``limit``."""
    parts = [str(p) for p in loc]
    if len(parts) > 1 and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _no_goal(goal_id: UUID, workflow_id: str) -> ApiError:
    rule = f"must name a goal of workflow {workflow_id!r} in this account; {goal_id} does not"
    return ApiError(404, "not_found", "goal_id", rule)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _problem(exc.status_code, exc.problem)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        field = "body" if first["type"] == "json_invalid" else _field(first["loc"])
        message = f"{field}: {first['msg']}"
        if "input" in first and first["type"] not in ("missing", "json_invalid"):
            message += f" (got {_shown(first['input'])})"
        return _problem(
            422, Problem(error="invalid_request", message=message, field=field, rule=first["msg"])
        )

    @app.exception_handler(InvalidGoal)
    async def invalid_goal(request: Request, exc: InvalidGoal) -> JSONResponse:
        problem = Problem(error="invalid_goal", message=str(exc), field=exc.field, rule=exc.message)
        return _problem(422, problem)

    @app.exception_handler(StaleVersion)
    async def stale_version(request: Request, exc: StaleVersion) -> JSONResponse:
        rule = f"must be the current version, {exc.current}"
        problem = Problem(error="version_conflict", message=str(exc), field="version", rule=rule)
        return _problem(409, problem)

    @app.exception_handler(InvalidToken)
    async def invalid_token(request: Request, exc: InvalidToken) -> JSONResponse:
        log.info("refused %s %s: %s; answered 401", request.method, request.url.path, exc.reason)
        return _problem(
            401,
            Problem(error="unauthorized", message=exc.reason, field="Authorization"),
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )

    @app.exception_handler(sa.exc.OperationalError)
    @app.exception_handler(sa.exc.InterfaceError)
    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning(
            "%s %s failed, PostgreSQL is unavailable: %s; answered 503, clients may retry",
            request.method,
            request.url.path,
            exc,
        )
        message = "the database is unavailable; retry shortly"
        return _problem(
            503,
            Problem(error="database_unavailable", message=message),
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers 400 itself for a body it cannot even decode (not UTF-8, say).
        problem = {
            400: Problem(error="invalid_request", message=f"body: {exc.detail}", field="body"),
            404: Problem(error="not_found", message=f"no route {request.url.path}"),
            405: Problem(error="method_not_allowed", message=f"{request.method} is not allowed"),
        }.get(exc.status_code, Problem(error="http_error", message=str(exc.detail)))
        return _problem(exc.status_code, problem, headers=getattr(exc, "headers", None))


# -- dependencies ----------------------------------------------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    description="A JWT with the claims account_id, sub (the user) and exp",
)


async def _caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise InvalidToken("no bearer token: send the header 'Authorization: Bearer <JWT>'")
    verifier: TokenVerifier = request.app.state.verifier
    return verifier.verify(credentials.credentials)


async def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


Caller = Annotated[Principal, Depends(_caller)]
Engine = Annotated[AsyncEngine, Depends(_engine)]
#: Workflow and contact ids are the CRM's text ids; PostgreSQL text cannot hold NUL.
_NO_NUL = "^[^\x00]+$"
WorkflowId = Annotated[
    str, Path(min_length=1, max_length=256, pattern=_NO_NUL, description="The CRM's workflow id")
]
ContactId = Annotated[
    str, Path(min_length=1, max_length=256, pattern=_NO_NUL, description="The CRM's contact id")
]
GoalId = Annotated[UUID, Path(description="The goal's id")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip")]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Items to return at most")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing, expired or invalid bearer token"},
    422: {"model": Problem, "description": "A field breaks a rule; the body names it"},
    503: {"model": Problem, "description": "The database is unavailable; retry"},
}
_GOAL_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    404: {"model": Problem, "description": "No such goal in this account's workflow"},
}
_BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The body cannot be decoded"},
}


def _checked_criteria(goal_type: str, criteria: dict[str, Any]) -> dict[str, Any]:
    """The worker's criteria rules, plus what PostgreSQL text and JSONB can hold."""
    normalized = validate_criteria(goal_type, criteria)
    _storable(normalized, "criteria")
    return normalized


def _storable(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _storable(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _storable(item, f"{where}.{i}")
    elif isinstance(value, str):
        if "\x00" in value:
            raise InvalidGoal(where, "must not contain the NUL character")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidGoal(where, "must be valid Unicode (no lone surrogates)") from None


# -- routes ----------------------------------------------------------------------------------


def _add_goal_routes(app: FastAPI) -> None:
    base = "/api/v1/workflows/{workflow_id}/goals"

    @app.post(
        base,
        status_code=201,
        response_model=Goal,
        responses={**_ERRORS, **_BODY_ERRORS},
        tags=["goals"],
    )
    async def create_goal(
        workflow_id: WorkflowId,
        body: GoalCreate,
        caller: Caller,
        engine: Engine,
        response: Response,
    ) -> dict[str, Any]:
        """Create a goal; running workers apply it within about a second."""
        goal_type = parse_goal_type(body.goal_type)
        criteria = _checked_criteria(goal_type, body.criteria)
        goal = await storage.create_goal(
            engine,
            account_id=caller.account_id,
            workflow_id=workflow_id,
            goal_type=goal_type,
            criteria=criteria,
            active=body.active,
            user_id=caller.user_id,
        )
        log.info(
            "goal %s (%s) created in workflow %s of account %s by %s; workers reload on the "
            "change notification",
            goal["id"],
            goal_type.value,
            workflow_id,
            caller.account_id,
            caller.user_id,
        )
        # Quoted: header values are Latin-1, workflow ids may hold any character.
        location = f"/api/v1/workflows/{quote(workflow_id, safe='')}/goals/{goal['id']}"
        response.headers["Location"] = location
        return goal

    @app.get(base, response_model=GoalPage, responses=_ERRORS, tags=["goals"])
    async def list_goals(
        workflow_id: WorkflowId,
        caller: Caller,
        engine: Engine,
        offset: Offset = 0,
        limit: Limit = DEFAULT_PAGE_SIZE,
    ) -> dict[str, Any]:
        """List the workflow's goals, oldest first, with the total count."""
        items, total = await storage.list_goals(
            engine, caller.account_id, workflow_id, offset=offset, limit=limit
        )
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    # Declared before ``{goal_id}`` so that "stats" is never read as a goal id.
    @app.get(base + "/stats", response_model=WorkflowStats, responses=_ERRORS, tags=["stats"])
    async def workflow_stats(
        workflow_id: WorkflowId,
        caller: Caller,
        engine: Engine,
        since: Annotated[
            AwareDatetime | None,
            Query(alias="from", description="Count enrollments that started at or after this"),
        ] = None,
        until: Annotated[
            AwareDatetime | None,
            Query(alias="to", description="Count enrollments that started before this"),
        ] = None,
    ) -> dict[str, Any]:
        """Enrolled, achieved, conversion rate and time to goal; per goal type and per goal."""
        if since is not None and until is not None and until <= since:
            rule = f"must be later than from ({since.isoformat()}), got {until.isoformat()}"
            raise ApiError(422, "invalid_request", "to", rule)
        stats = await storage.goal_stats(
            engine, caller.account_id, workflow_id, since=since, until=until
        )
        return {"workflow_id": workflow_id, "from": since, "to": until, **stats}

    @app.get(base + "/{goal_id}", response_model=Goal, responses=_GOAL_ERRORS, tags=["goals"])
    async def get_goal(
        workflow_id: WorkflowId, goal_id: GoalId, caller: Caller, engine: Engine
    ) -> dict[str, Any]:
        """Read one goal."""
        goal = await storage.get_goal(engine, caller.account_id, workflow_id, goal_id)
        if goal is None:
            raise _no_goal(goal_id, workflow_id)
        return goal

    @app.patch(
        base + "/{goal_id}",
        response_model=Goal,
        responses={
            **_GOAL_ERRORS,
            **_BODY_ERRORS,
            409: {"model": Problem, "description": "The goal changed since that version"},
        },
        tags=["goals"],
    )
    async def change_goal(
        workflow_id: WorkflowId, goal_id: GoalId, body: GoalChange, caller: Caller, engine: Engine
    ) -> dict[str, Any]:
        """Change criteria and/or the active flag if the goal is still at ``version``."""
        changes: dict[str, Any] = {}
        if body.active is not None:
            changes["active"] = body.active
        if body.criteria is not None:
            current = await storage.get_goal(engine, caller.account_id, workflow_id, goal_id)
            if current is None:
                raise _no_goal(goal_id, workflow_id)
            changes["criteria"] = _checked_criteria(current["goal_type"], body.criteria)
        if not changes:
            raise ApiError(422, "invalid_request", "body", "give criteria, active or both")
        goal = await storage.update_goal(
            engine,
            caller.account_id,
            workflow_id,
            goal_id,
            version=body.version,
            changes=changes,
            user_id=caller.user_id,
        )
        if goal is None:
            raise _no_goal(goal_id, workflow_id)
        log.info(
            "goal %s of workflow %s in account %s changed by %s to version %d (%s); workers "
            "reload on the change notification",
            goal_id,
            workflow_id,
            caller.account_id,
            caller.user_id,
            goal["version"],
            ", ".join(sorted(changes)),
        )
        return goal

    @app.delete(base + "/{goal_id}", status_code=204, responses=_GOAL_ERRORS, tags=["goals"])
    async def delete_goal(
        workflow_id: WorkflowId, goal_id: GoalId, caller: Caller, engine: Engine
    ) -> Response:
        """Delete a goal; the achievements it produced stay."""
        if not await storage.delete_goal(engine, caller.account_id, workflow_id, goal_id):
            raise _no_goal(goal_id, workflow_id)
        log.info(
            "goal %s of workflow %s in account %s deleted by %s; workers reload on the change "
            "notification",
            goal_id,
            workflow_id,
            caller.account_id,
            caller.user_id,
        )
        return Response(status_code=204)


def _add_achievement_routes(app: FastAPI) -> None:
    @app.get(
        "/api/v1/workflows/{workflow_id}/achievements",
        response_model=AchievementPage,
        responses=_ERRORS,
        tags=["achievements"],
    )
    async def workflow_achievements(
        workflow_id: WorkflowId,
        caller: Caller,
        engine: Engine,
        offset: Offset = 0,
        limit: Limit = DEFAULT_PAGE_SIZE,
    ) -> dict[str, Any]:
        """The workflow's achievements, newest first."""
        items, total = await storage.list_achievements(
            engine, caller.account_id, workflow_id=workflow_id, offset=offset, limit=limit
        )
        return {"items": items, "total": total, "offset": offset, "limit": limit}

    @app.get(
        "/api/v1/contacts/{contact_id}/achievements",
        response_model=AchievementPage,
        responses=_ERRORS,
        tags=["achievements"],
    )
    async def contact_achievements(
        contact_id: ContactId,
        caller: Caller,
        engine: Engine,
        offset: Offset = 0,
        limit: Limit = DEFAULT_PAGE_SIZE,
    ) -> dict[str, Any]:
        """The contact's achievements in every workflow, newest first."""
        items, total = await storage.list_achievements(
            engine, caller.account_id, contact_id=contact_id, offset=offset, limit=limit
        )
        return {"items": items, "total": total, "offset": offset, "limit": limit}


def _add_health_routes(app: FastAPI) -> None:
    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        """The process is up (no authentication)."""
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        responses={503: {"model": Problem, "description": "PostgreSQL does not answer"}},
    )
    async def readyz(engine: Engine) -> Any:
        """PostgreSQL answers, so requests can be served (no authentication)."""
        try:
            await asyncio.wait_for(storage.database_answers(engine), READY_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, sa.exc.DBAPIError) as exc:
            log.warning("not ready, PostgreSQL does not answer: %r; answered 503", exc)
            return _problem(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                Problem(
                    error="database_unavailable",
                    message="PostgreSQL does not answer; requests fail until it does",
                ),
            )
        return {"status": "ready"}


def create_app(settings: Settings) -> FastAPI:
    """The API application; raises AuthNotConfigured when no token key is configured."""
    verifier = TokenVerifier(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.engine = storage.make_engine(settings.database_url)
        log.info("goals API ready: tokens verified with %s", verifier.algorithm)
        try:
            yield
        finally:
            await app.state.engine.dispose()

    app = FastAPI(
        title="goalworker goals API",
        version="1",
        description="Configure workflow goals, read conversion statistics and achievements.",
        lifespan=lifespan,
    )
    app.state.verifier = verifier
    _install_error_handlers(app)
    _add_health_routes(app)
    _add_goal_routes(app)
    _add_achievement_routes(app)
    return app
