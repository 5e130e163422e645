"""The Prometheus adapter against a real Prometheus, and its failure modes against small local servers.

Query semantics (lookback, NaN, scalar results, error types) come from the real server; behaviour a
real Prometheus cannot be made to show on demand (hanging, 5xx, echoing secrets, counting requests
in flight) comes from aiohttp servers on 127.0.0.1 that the tests control.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from retrain_operator.adapters.fake_prometheus import FakeMetricSource
from retrain_operator.adapters.prometheus import (
    PrometheusBadResponse,
    PrometheusClient,
    PrometheusError,
    PrometheusQueryError,
    PrometheusTimeout,
    PrometheusUnreachable,
    Sample,
    parse_query_response,
    sanitize,
)
from sandbox.prometheus import PrometheusServer, PushError, Series, start_prometheus

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


@pytest.fixture
def base() -> float:
    """A minute-aligned time an hour ago: inside the out-of-order window, clear of "now"."""
    return math.floor(time.time() / 60) * 60 - 3600.0


@asynccontextmanager
async def serve(handler: Handler, *, ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A one-route aiohttp server on 127.0.0.1; yields its base URL."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _scalar_body(value: str = "1") -> web.Response:
    return web.json_response({"status": "success", "data": {"resultType": "scalar", "result": [1.5, value]}})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- against the real Prometheus ---------------------------------------------------------------


async def test_avg_over_time_of_pushed_history_is_exact(
    prometheus: PrometheusServer, prom_series_id: str, base: float
) -> None:
    labels = {"test": prom_series_id, "model": "m1"}
    prometheus.push([Series("model_accuracy", labels, [(base + 60 * i, float(i)) for i in range(60)])])

    async with PrometheusClient(url=prometheus.url) as client:
        # Half a minute past a sample, so the 10m window holds minutes 21..30 whatever the
        # inclusiveness of the window's left edge.
        at = _at(base + 30 * 60 + 30)
        samples = await client.query(f'avg_over_time(model_accuracy{{test="{prom_series_id}"}}[10m])', at=at)

    assert samples == [Sample(labels=labels, value=25.5, timestamp=base + 30 * 60 + 30)]


async def test_instant_vector_keeps_metric_name_and_labels(
    prometheus: PrometheusServer, prom_series_id: str, base: float
) -> None:
    prometheus.push(
        [
            Series("requests", {"test": prom_series_id, "pod": "a"}, [(base, 1.0)]),
            Series("requests", {"test": prom_series_id, "pod": "b"}, [(base, 2.0)]),
        ]
    )
    async with PrometheusClient(url=prometheus.url) as client:
        samples = await client.query(f'requests{{test="{prom_series_id}"}}', at=_at(base + 10))

    assert sorted((s.labels["pod"], s.labels["__name__"], s.value) for s in samples) == [
        ("a", "requests", 1.0),
        ("b", "requests", 2.0),
    ]


async def test_scalar_result_is_one_sample_without_labels(
    prometheus: PrometheusServer, prom_series_id: str, base: float
) -> None:
    prometheus.push([Series("gauge", {"test": prom_series_id}, [(base, 0.75)])])
    async with PrometheusClient(url=prometheus.url) as client:
        samples = await client.query(f'scalar(gauge{{test="{prom_series_id}"}})', at=_at(base))

    assert samples == [Sample(labels={}, value=0.75, timestamp=base)]


async def test_no_data_is_an_empty_result(prometheus: PrometheusServer, prom_series_id: str) -> None:
    async with PrometheusClient(url=prometheus.url) as client:
        samples = await client.query(f'gauge{{test="{prom_series_id}"}}', at=datetime.now(UTC))

    assert samples == []


async def test_nan_and_infinity_are_returned_as_floats(
    prometheus: PrometheusServer, prom_series_id: str, base: float
) -> None:
    prometheus.push(
        [
            Series("ratio", {"test": prom_series_id, "k": "nan"}, [(base, 1.0), (base + 60, math.nan)]),
            Series("ratio", {"test": prom_series_id, "k": "inf"}, [(base + 60, math.inf)]),
        ]
    )
    async with PrometheusClient(url=prometheus.url) as client:
        samples = await client.query(f'ratio{{test="{prom_series_id}"}}', at=_at(base + 60))
        averaged = await client.query(f'avg_over_time(ratio{{test="{prom_series_id}",k="nan"}}[2m])', at=_at(base + 90))

    by_kind = {s.labels["k"]: s.value for s in samples}
    assert math.isnan(by_kind["nan"])
    assert by_kind["inf"] == math.inf
    assert len(averaged) == 1 and math.isnan(averaged[0].value)


@pytest.mark.parametrize(
    ("promql", "error", "reason"),
    [
        ("sum(", PrometheusQueryError, "BadData"),
        ("rate(up[5m]", PrometheusQueryError, "BadData"),
        ('up{test="X"}[5m]', PrometheusQueryError, "RangeVectorResult"),
        ('"a string"', PrometheusBadResponse, "UnexpectedResultType"),
    ],
)
async def test_query_rejections_from_prometheus(
    prometheus: PrometheusServer, promql: str, error: type[PrometheusError], reason: str
) -> None:
    async with PrometheusClient(url=prometheus.url) as client:
        with pytest.raises(error) as caught:
            await client.query(promql, at=datetime.now(UTC))

    assert caught.value.reason == reason
    assert "\n" not in str(caught.value)


async def test_execution_error_is_a_query_error(prometheus: PrometheusServer, prom_series_id: str, base: float) -> None:
    prometheus.push([Series("dup", {"test": prom_series_id, "pod": pod}, [(base, 1.0)]) for pod in ("a", "b")])
    async with PrometheusClient(url=prometheus.url) as client:
        with pytest.raises(PrometheusQueryError) as caught:
            selector = f'dup{{test="{prom_series_id}"}}'
            await client.query(f"{selector} + on() {selector}", at=_at(base))

    assert caught.value.reason == "ExecutionError"
    assert "duplicate series" in str(caught.value)


async def test_is_online(prometheus: PrometheusServer) -> None:
    async with PrometheusClient(url=prometheus.url) as online:
        assert await online.is_online()
    async with PrometheusClient(url=f"http://127.0.0.1:{_closed_port()}") as offline:
        assert not await offline.is_online()


async def test_backfilled_history_at_a_fixed_date(tmp_path: Path, prometheus_binaries: tuple[str, str]) -> None:
    # 2024-01-01T00:00:00Z, far outside any out-of-order window: only a backfill can store it.
    start = 1704067200.0
    history = [
        Series("model_accuracy", {"model": "fixed"}, [(start + 60 * i, float(i)) for i in range(60)]),
        Series("model_accuracy", {"model": "nan"}, [(start, math.nan)]),
        Series("model_accuracy", {"model": "recent"}, [(time.time() - 60, 0.5)]),
    ]
    with start_prometheus(tmp_path, history=history) as server:
        with pytest.raises(PushError):
            server.push([Series("model_accuracy", {"model": "late"}, [(start, 1.0)])])
        async with PrometheusClient(url=server.url) as client:
            avg = await client.query('avg_over_time(model_accuracy{model="fixed"}[10m])', at=_at(start + 30 * 60 + 30))
            nan = await client.query('model_accuracy{model="nan"}', at=_at(start))
            recent = await client.query('model_accuracy{model="recent"}', at=datetime.now(UTC))

    assert [s.value for s in avg] == [25.5]
    assert len(nan) == 1 and math.isnan(nan[0].value)
    assert [s.value for s in recent] == [0.5]


# --- transport failures -------------------------------------------------------------------------


async def test_connection_refused_is_unreachable() -> None:
    async with PrometheusClient(url=f"http://127.0.0.1:{_closed_port()}") as client:
        with pytest.raises(PrometheusUnreachable) as caught:
            await client.query("up", at=datetime.now(UTC))

    assert caught.value.reason == "Unreachable"


async def test_server_that_never_answers_times_out() -> None:
    never = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await never.wait()
        raise AssertionError("unreachable")

    async with serve(hang) as url, PrometheusClient(url=url, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(PrometheusTimeout) as caught:
            await client.query("up", at=datetime.now(UTC))

    assert caught.value.reason == "Timeout"
    assert time.monotonic() - started < 2


async def test_server_side_query_timeout() -> None:
    async def timed_out(request: web.Request) -> web.Response:
        body = {"status": "error", "errorType": "timeout", "error": "query timed out in query execution"}
        return web.json_response(body, status=503)

    async with serve(timed_out) as url, PrometheusClient(url=url) as client:
        with pytest.raises(PrometheusTimeout) as caught:
            await client.query("up", at=datetime.now(UTC))

    assert caught.value.reason == "QueryTimeout"


# --- what goes over the wire --------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Mapping[str, str], dict[str, str]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((request.method, request.path, request.headers.copy(), form))
        return _scalar_body()


async def test_form_parameters_and_headers_are_sent() -> None:
    recorder = Recorder()
    async with (
        serve(recorder.handle) as url,
        PrometheusClient(
            url=url + "/prefix/", timeout=7.5, headers={"X-Team": "ml", "X-Scope-OrgID": "default"}
        ) as client,
    ):
        samples = await client.query("up == 1", at=_at(1700000000.25), headers={"x-scope-orgid": "tenant-a"})

    assert samples == [Sample(labels={}, value=1.0, timestamp=1.5)]
    [(method, path, headers, form)] = recorder.requests
    assert (method, path) == ("POST", "/prefix/api/v1/query")
    assert form == {"query": "up == 1", "time": "1700000000.250", "timeout": "7.5s"}
    assert headers["X-Team"] == "ml"
    assert headers["X-Scope-OrgID"] == "tenant-a"
    assert "Authorization" not in headers


async def test_bearer_token_is_sent() -> None:
    recorder = Recorder()
    async with serve(recorder.handle) as url, PrometheusClient(url=url, bearer_token="tok-123") as client:
        await client.query("up", at=datetime.now(UTC))

    assert recorder.requests[0][2]["Authorization"] == "Bearer tok-123"


async def test_basic_auth_is_sent() -> None:
    recorder = Recorder()
    async with serve(recorder.handle) as url, PrometheusClient(url=url, basic_auth=("alice", "s3cr:et")) as client:
        await client.query("up", at=datetime.now(UTC))

    expected = "Basic " + base64.b64encode(b"alice:s3cr:et").decode()
    assert recorder.requests[0][2]["Authorization"] == expected


async def test_per_query_headers_cannot_set_authorization() -> None:
    async with PrometheusClient(url="http://127.0.0.1:9", bearer_token="t") as client:
        with pytest.raises(ValueError, match="Authorization"):
            await client.query("up", at=datetime.now(UTC), headers={"authorization": "Bearer other"})


async def test_concurrency_bound_is_honoured() -> None:
    # Each request is held until three are in flight (or every request has started), so the bound
    # is reached, and a client that ignored it would show more than three at once.
    total, bound = 10, 3
    in_flight = started = peak = 0
    changed = asyncio.Condition()

    async def counting(request: web.Request) -> web.Response:
        nonlocal in_flight, started, peak
        async with changed:
            in_flight += 1
            started += 1
            peak = max(peak, in_flight)
            changed.notify_all()
            await changed.wait_for(lambda: in_flight >= bound or started == total)
        response = _scalar_body()
        async with changed:
            in_flight -= 1
        return response

    async with serve(counting) as url, PrometheusClient(url=url, max_concurrency=bound) as client:
        results = await asyncio.gather(*(client.query("up", at=datetime.now(UTC)) for _ in range(total)))

    assert len(results) == total
    assert peak == bound


async def test_redirects_are_not_followed() -> None:
    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://127.0.0.1:9/steal")

    async with serve(redirect) as url, PrometheusClient(url=url, bearer_token="tok-123") as client:
        with pytest.raises(PrometheusBadResponse) as caught:
            await client.query("up", at=datetime.now(UTC))

    assert caught.value.reason == "HTTPError"


# --- bad responses and what their messages may contain -----------------------------------------


async def test_echoed_secrets_are_not_repeated_in_errors() -> None:
    body = (
        "upstream proxy error, you sent tok-very-secret-123\nAuthorization: Bearer tok-very-secret-123\n"
        + "password=hunter2 "
        + "x" * 5000
        + " api_key=AKIA-LAST-PART"
    )

    async def leaky(request: web.Request) -> web.Response:
        return web.Response(status=502, text=body)

    async with serve(leaky) as url, PrometheusClient(url=url, bearer_token="tok-very-secret-123") as client:
        with pytest.raises(PrometheusBadResponse) as caught:
            await client.query("up", at=datetime.now(UTC))

    message = str(caught.value)
    assert caught.value.reason == "ServerError"
    assert "upstream proxy error" in message
    for secret in ("tok-very-secret-123", "hunter2", "AKIA-LAST-PART", "\n"):
        assert secret not in message
    assert len(message) <= 250


async def test_response_size_is_bounded() -> None:
    async def huge(request: web.Request) -> web.Response:
        return web.Response(text=json.dumps({"status": "success", "data": {"x": "y" * 10_000}}))

    async with serve(huge) as url, PrometheusClient(url=url, max_response_bytes=1000) as client:
        with pytest.raises(PrometheusBadResponse) as caught:
            await client.query("up", at=datetime.now(UTC))

    assert caught.value.reason == "ResponseTooLarge"


def _doc(result_type: str, result: object) -> bytes:
    return json.dumps({"status": "success", "data": {"resultType": result_type, "result": result}}).encode()


@pytest.mark.parametrize(
    ("status", "body", "error", "reason"),
    [
        (401, b"Unauthorized", PrometheusBadResponse, "Unauthorized"),
        (403, b"", PrometheusBadResponse, "Forbidden"),
        (500, b"boom", PrometheusBadResponse, "ServerError"),
        (503, b'{"status":"error","errorType":"unavailable","error":"x"}', PrometheusBadResponse, "ServerError"),
        (404, b"404 page not found", PrometheusBadResponse, "HTTPError"),
        (400, b'{"status":"error","errorType":"bad_data","error":"parse error"}', PrometheusQueryError, "BadData"),
        (422, b'{"status":"error","errorType":"execution","error":"x"}', PrometheusQueryError, "ExecutionError"),
        (400, b'{"status":"error","errorType":"weird","error":"x"}', PrometheusQueryError, "QueryError"),
        (200, b"<html>login</html>", PrometheusBadResponse, "InvalidJSON"),
        (200, b'{"status":"success"}', PrometheusBadResponse, "UnexpectedResponse"),
        (200, b'["not", "a", "map"]', PrometheusBadResponse, "UnexpectedResponse"),
        (200, _doc("vector", [{"metric": {}, "value": [1, 2]}]), PrometheusBadResponse, "UnexpectedResponse"),
        (200, _doc("vector", [{"metric": {}, "value": [1, "abc"]}]), PrometheusBadResponse, "UnexpectedResponse"),
        (200, _doc("vector", [{"metric": {}, "histogram": [1, {}]}]), PrometheusBadResponse, "UnexpectedResponse"),
        (200, _doc("matrix", []), PrometheusQueryError, "RangeVectorResult"),
        (200, _doc("string", [1, "x"]), PrometheusBadResponse, "UnexpectedResultType"),
        (200, _doc("other", []), PrometheusBadResponse, "UnexpectedResultType"),
    ],
)
def test_response_classification(status: int, body: bytes, error: type[PrometheusError], reason: str) -> None:
    with pytest.raises(error) as caught:
        parse_query_response(status, body)

    assert caught.value.reason == reason


def test_parse_vector_with_warnings() -> None:
    body = json.dumps(
        {
            "status": "success",
            "warnings": ["partial response"],
            "data": {"resultType": "vector", "result": [{"metric": {"a": "b"}, "value": [10.5, "-Inf"]}]},
        }
    ).encode()

    assert parse_query_response(200, body) == [Sample(labels={"a": "b"}, value=-math.inf, timestamp=10.5)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("line one\nline two\r\n\tend", "line one line two end"),
        ("Authorization: Bearer abc.def", "Authorization: Bearer [REDACTED]"),
        ('{"token": "abc"}', '{"token": "[REDACTED]"}'),
        ("unexpected token in expression", "unexpected token in expression"),
        ("sent eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln here", "sent [REDACTED] here"),
        ("x" * 500, "x" * 197 + "..."),
    ],
)
def test_sanitize(text: str, expected: str) -> None:
    assert sanitize(text) == expected


# --- construction and lifecycle -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"url": "127.0.0.1:9090"},
        {"url": "ftp://prom"},
        {"url": "http://user:pass@prom:9090"},
        {"url": "http://prom:9090/?x=1"},
        {"url": "http://prom:9090", "bearer_token": "a", "basic_auth": ("u", "p")},
        {"url": "http://prom:9090", "bearer_token": "a", "headers": {"Authorization": "b"}},
        {"url": "http://prom:9090", "headers": {"X-Bad": "a\r\nInjected: 1"}},
        {"url": "http://prom:9090", "ca_pem": "x"},
        {"url": "https://prom:9090", "ca_pem": "not a certificate"},
        {"url": "http://prom:9090", "timeout": 0},
        {"url": "http://prom:9090", "max_concurrency": 0},
    ],
)
def test_invalid_configuration_is_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        PrometheusClient(**kwargs)  # type: ignore[arg-type]


async def test_naive_time_is_rejected_and_closed_client_refuses() -> None:
    client = PrometheusClient(url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="timezone"):
        await client.query("up", at=datetime(2024, 1, 1))
    await client.close()
    with pytest.raises(RuntimeError, match="closed"):
        await client.query("up", at=datetime.now(UTC))


# --- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    try:
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip
    except FileNotFoundError:
        pytest.skip("openssl is needed to make a test certificate")
    return cert, key


async def test_tls_with_custom_ca(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def ok(request: web.Request) -> web.Response:
        return _scalar_body("2")

    async with serve(ok, ssl_context=server_context) as url:
        async with PrometheusClient(url=url, ca_pem=cert.read_text()) as trusted:
            assert [s.value for s in await trusted.query("up", at=datetime.now(UTC))] == [2.0]
        async with PrometheusClient(url=url) as untrusted:
            with pytest.raises(PrometheusUnreachable) as caught:
                await untrusted.query("up", at=datetime.now(UTC))
            assert caught.value.reason == "TLSError"
        async with PrometheusClient(url=url, insecure_skip_verify=True) as skipping:
            assert [s.value for s in await skipping.query("up", at=datetime.now(UTC))] == [2.0]


# --- the fake -----------------------------------------------------------------------------------


async def test_fake_metric_source() -> None:
    failure = PrometheusTimeout("slow", reason="Timeout")
    fake = FakeMetricSource(
        {
            "a": [Sample(labels={"m": "x"}, value=1.0, timestamp=0.0)],
            "b": 0.5,
            "c": failure,
            "d": lambda at: at.timestamp(),
        }
    )
    at = _at(100.0)

    assert await fake.query("a", at=at) == [Sample(labels={"m": "x"}, value=1.0, timestamp=0.0)]
    assert await fake.query("b", at=at, headers={"X-Scope-OrgID": "t"}) == [
        Sample(labels={}, value=0.5, timestamp=100.0)
    ]
    with pytest.raises(PrometheusTimeout):
        await fake.query("c", at=at)
    assert [s.value for s in await fake.query("d", at=at)] == [100.0]
    with pytest.raises(KeyError, match="unknown"):
        await fake.query("unknown", at=at)
    assert fake.queries == ["a", "b", "c", "d", "unknown"]
    assert fake.calls[1].headers == {"X-Scope-OrgID": "t"}
    assert await fake.is_online()
