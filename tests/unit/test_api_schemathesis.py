"""The whole OpenAPI document of the live HTTP API, run by schemathesis (property-based):
no request it generates gets a 5xx, and every response matches the document (status code,
content type, body schema). With an `ops` token, so requests reach the handlers;
derandomized and bounded in examples per operation, so that CI runs the same cases every
time in well under 30 s. (Each operation through hypothesis directly: schemathesis' lazy
pytest loader does not work with pytest 9.)"""

from __future__ import annotations

import time
from pathlib import Path

import schemathesis
from api_server import LiveApi, daemon_status, serve
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from callpolicy.service.metrics import Metrics

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def test_every_operation_answers_within_its_schema_and_never_5xx(tmp_path: Path) -> None:
    metrics = Metrics()  # the daemon's own status listener, so /v1/status answers
    metrics.publish_status(daemon_status())
    port = metrics.start("127.0.0.1", 0)
    try:
        with serve(tmp_path, metrics_port=port) as api:
            run_schema(api)
    finally:
        metrics.stop()


def run_schema(api: LiveApi) -> None:
    schema = schemathesis.openapi.from_url(f"{api.url}/v1/openapi.json", timeout=10)
    headers = {"Authorization": f"Bearer {api.tokens['ops']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 17  # every route of the API is in the document
    started, statuses = time.monotonic(), {}

    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None,
                  database=None, suppress_health_check=list(HealthCheck))
        def run(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=api.url, headers=headers,
                                              checks=CHECKS)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

        run()
    print(f"schemathesis: {len(operations)} operations, {sum(statuses.values())} requests "
          f"in {time.monotonic() - started:.1f} s, statuses {dict(sorted(statuses.items()))}")
    assert not any(code >= 500 for code in statuses)
    assert any(200 <= code < 300 for code in statuses)  # some requests got through
