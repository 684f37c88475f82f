"""A schema-driven fuzz of the goals API: generated requests never get a server error."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from goalworker.api import create_app
from goalworker.auth import mint_token
from goalworker.settings import Settings

from .goals_api import api_settings

pytestmark = pytest.mark.integration

#: Examples per operation, kept small so the whole fuzz runs in well under a minute.
EXAMPLES = 40


@pytest.fixture(scope="module")
def fuzzed_api(base_settings: Settings) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(api_settings(base_settings)))


@pytest.fixture(scope="module")
def bearer(base_settings: Settings) -> dict[str, str]:
    token = mint_token(api_settings(base_settings), f"fuzz-{uuid.uuid4().hex[:10]}", "fuzzer")
    return {"Authorization": f"Bearer {token}"}


schema = schemathesis.pytest.from_fixture("fuzzed_api")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_generated_requests_get_documented_answers_and_never_a_server_error(
    case: Any, bearer: dict[str, str]
) -> None:
    case.call_and_validate(
        headers=bearer,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
