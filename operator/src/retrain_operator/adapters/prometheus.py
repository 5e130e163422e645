"""Instant PromQL queries against a Prometheus-compatible HTTP API, behind a small interface.

The reconcile layer reads every trigger value through :class:`MetricSource`, so component tests
swap in :class:`~retrain_operator.adapters.fake_prometheus.FakeMetricSource` and only this module
knows about HTTP. :class:`PrometheusClient` is the real implementation: one aiohttp session per
endpoint, a semaphore that bounds queries in flight (``MetricsEndpoint.spec.maxConcurrency``), a
time limit per query, bearer or basic auth, extra and per-query headers (a tenant header), and TLS
with a custom CA.

Every failure is one of the :class:`PrometheusError` subclasses below, with a CamelCase
``reason`` from a small fixed set (it ends up in conditions and in metric labels, so it must stay
bounded) and a one-line message. Messages never carry a response body verbatim: at most a
~200-character snippet with newlines removed and anything that looks like a credential, or equals
one of this client's own credentials, replaced by ``[REDACTED]``.

=========================  ============================================================
exception                  reasons
=========================  ============================================================
PrometheusUnreachable      ``Unreachable`` (refused, DNS), ``TLSError``, ``ConnectionLost``
PrometheusTimeout          ``Timeout`` (our time limit), ``QueryTimeout`` (the server's)
PrometheusQueryError       ``BadData`` (400), ``ExecutionError`` (422), ``QueryError`` (other
                           4xx with an error body), ``RangeVectorResult`` (the query is a
                           range vector, which an instant query cannot use)
PrometheusBadResponse      ``Unauthorized`` (401), ``Forbidden`` (403), ``ServerError`` (5xx),
                           ``HTTPError`` (other status), ``InvalidJSON``,
                           ``UnexpectedResponse`` (wrong shape), ``UnexpectedResultType``
                           (a string result), ``ResponseTooLarge``
=========================  ============================================================

Limits, on purpose:

* Instant queries for the operator; :meth:`PrometheusClient.query_range` serves ``backtest``, which
  reads a whole period per query template (at most :data:`MAX_POINTS_PER_SERIES` points a series per
  call, Prometheus' own limit; the caller splits a longer period).
* No retries: the scheduler decides what an inconclusive trigger means and when to ask again.
* ``warnings`` in a successful response (for example a partial response from Thanos, or PromQL
  annotations) are logged at DEBUG and otherwise ignored: the result is still the server's answer,
  and a warning per query per policy would flood the log.
* The timestamp of a vector sample is the evaluation time, as Prometheus reports it, not the time
  the sample was scraped; use ``timestamp(...)`` in PromQL to detect stale data.
* NaN and infinities are returned as floats; deciding what they mean is the caller's job.
* Native histogram samples are rejected as ``UnexpectedResponse``.
* Redirects are not followed (a 3xx is ``HTTPError``), so credentials never go to another address.
* Proxy variables and ``.netrc`` in the environment are ignored (``trust_env=False``), so nothing
  but the endpoint's own settings can add credentials to a request.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import re
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

import aiohttp
from yarl import URL

__all__ = [
    "MetricSource",
    "PrometheusBadResponse",
    "PrometheusClient",
    "PrometheusError",
    "PrometheusQueryError",
    "PrometheusTimeout",
    "PrometheusUnreachable",
    "RangeSeries",
    "Sample",
]

_log = logging.getLogger(__name__)

SNIPPET_LIMIT = 200
DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    """One element of an instant-query result; a scalar result has empty labels."""

    labels: Mapping[str, str]
    value: float
    timestamp: float


@dataclass(frozen=True)
class RangeSeries:
    """One series of a range-query result: its labels and its (timestamp, value) points in time order."""

    labels: Mapping[str, str]
    points: Sequence[tuple[float, float]]


MAX_POINTS_PER_SERIES = 11_000
DEFAULT_MAX_RANGE_RESPONSE_BYTES = 512 * 1024 * 1024


class MetricSource(Protocol):
    """Where trigger values come from."""

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        """Evaluate ``promql`` as an instant query at ``at`` (timezone-aware)."""
        ...


class PrometheusError(Exception):
    """Any failure to get a usable answer; ``reason`` is CamelCase and from a fixed set."""

    reason: str = "PrometheusError"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class PrometheusUnreachable(PrometheusError):
    """No HTTP exchange happened: connection refused or lost, DNS, or TLS failure."""

    reason = "Unreachable"


class PrometheusTimeout(PrometheusError):
    """The query took longer than the client's or the server's time limit."""

    reason = "Timeout"


class PrometheusQueryError(PrometheusError):
    """Prometheus rejected the query itself; asking again will not help until the query changes."""

    reason = "QueryError"


class PrometheusBadResponse(PrometheusError):
    """The endpoint answered, but not with a usable instant-query result."""

    reason = "UnexpectedResponse"


# --- sanitising text that came from the other side --------------------------------------------

# A credential keyword, its separator, an optional auth scheme, then the value to mask. Bare
# whitespace only separates "Bearer"/"Basic" from a value, so prose such as "unexpected token" in a
# PromQL error stays readable.
_CREDENTIAL = re.compile(
    r"(?i)(?:\b(authorization|token|access_token|password|passwd|secret|api[-_]?key|access[-_]?key|"
    r"secret[-_]?key|private[-_]?key|session|cookie)\b(\"?'?\s*[:=]\s*\"?'?)|\b(bearer|basic)(\s+))"
    r"((?:bearer|basic)\s+)?"
    r"([^\s\"'&,;}]+)"
)
_JWT = re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s{2,}")


def sanitize(text: str, *, secrets: Sequence[str] = (), limit: int = SNIPPET_LIMIT) -> str:
    """One bounded line of ``text`` with credentials masked, safe for conditions and logs."""
    # Truncate generously first so a huge body costs no regex time, then mask, then trim to size.
    text = text[: limit * 4]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    text = _JWT.sub("[REDACTED]", text)
    text = _CREDENTIAL.sub(lambda m: "".join(g or "" for g in m.groups()[:5]) + "[REDACTED]", text)
    text = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _http_status_error(status: int, snippet: str) -> PrometheusError:
    detail = f": {snippet}" if snippet else ""
    if status == 401:
        return PrometheusBadResponse(f"HTTP 401, credentials rejected{detail}", reason="Unauthorized")
    if status == 403:
        return PrometheusBadResponse(f"HTTP 403, access denied{detail}", reason="Forbidden")
    if status >= 500:
        return PrometheusBadResponse(f"HTTP {status}{detail}", reason="ServerError")
    return PrometheusBadResponse(f"HTTP {status}{detail}", reason="HTTPError")


# errorType values of the Prometheus HTTP API (web/api/v1) and the exception each one means.
def _api_error(status: int, error_type: str, message: str) -> PrometheusError:
    text = f"{error_type}: {message}" if message else error_type
    if error_type == "bad_data":
        return PrometheusQueryError(text, reason="BadData")
    if error_type == "execution":
        return PrometheusQueryError(text, reason="ExecutionError")
    if error_type == "timeout":
        return PrometheusTimeout(text, reason="QueryTimeout")
    if status in (401, 403) or status >= 500:
        return _http_status_error(status, text)
    if 400 <= status < 500:
        return PrometheusQueryError(f"HTTP {status}, {text}", reason="QueryError")
    return PrometheusBadResponse(f"HTTP {status}, {text}", reason="UnexpectedResponse")


def _float(raw: Any) -> float:
    # Prometheus sends sample values as strings so that NaN and infinities survive JSON.
    if not isinstance(raw, str):
        raise ValueError("sample value is not a string")
    return float(raw)


def _pair(raw: Any) -> tuple[float, float]:
    if not isinstance(raw, list) or len(raw) != 2 or not isinstance(raw[0], int | float):
        raise ValueError("sample is not a [timestamp, value] pair")
    return float(raw[0]), _float(raw[1])


def _labels(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise ValueError("metric is not a map of strings")
    return raw


def _document(status: int, body: bytes, *, secrets: Sequence[str]) -> Any:
    """The JSON document of a query response, or the :class:`PrometheusError` an error response amounts to.

    Messages quote the body only through :func:`sanitize`.
    """
    try:
        document: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        document = None
    if isinstance(document, dict) and document.get("status") == "error":
        raise _api_error(
            status,
            sanitize(str(document.get("errorType") or "unknown"), limit=40),
            sanitize(str(document.get("error") or ""), secrets=secrets),
        )
    if status != 200:
        snippet = sanitize(body.decode("utf-8", errors="replace"), secrets=secrets)
        raise _http_status_error(status, snippet)
    if document is None:
        snippet = sanitize(body.decode("utf-8", errors="replace"), secrets=secrets)
        raise PrometheusBadResponse(f"response is not JSON: {snippet}", reason="InvalidJSON")
    return document


def parse_query_response(status: int, body: bytes, *, secrets: Sequence[str] = ()) -> list[Sample]:
    """The samples of an instant-query response, or the :class:`PrometheusError` it amounts to."""
    document = _document(status, body, secrets=secrets)
    try:
        if not isinstance(document, dict) or document.get("status") != "success":
            raise ValueError("status is not 'success'")
        data = document["data"]
        result_type, result = data["resultType"], data["result"]
        warnings = document.get("warnings")
        if warnings:
            _log.debug("Prometheus warnings: %s", sanitize(str(warnings), secrets=secrets))
        if result_type == "vector":
            if not isinstance(result, list):
                raise ValueError("vector result is not a list")
            samples = []
            for element in result:
                if "value" not in element:
                    raise ValueError("sample without a float value (native histogram?)")
                timestamp, value = _pair(element["value"])
                samples.append(Sample(labels=_labels(element["metric"]), value=value, timestamp=timestamp))
            return samples
        if result_type == "scalar":
            timestamp, value = _pair(result)
            return [Sample(labels={}, value=value, timestamp=timestamp)]
    except (KeyError, TypeError, ValueError) as e:
        # "from None": a conversion error's message and context may hold raw body text.
        raise PrometheusBadResponse(
            f"unexpected response shape: {sanitize(str(e), secrets=secrets)}", reason="UnexpectedResponse"
        ) from None
    if result_type == "matrix":
        raise PrometheusQueryError(
            "query returned a range vector; an instant vector or a scalar is required",
            reason="RangeVectorResult",
        )
    raise PrometheusBadResponse(
        f"unexpected result type {sanitize(str(result_type), limit=40)!r}", reason="UnexpectedResultType"
    )


def parse_range_response(status: int, body: bytes, *, secrets: Sequence[str] = ()) -> list[RangeSeries]:
    """The series of a range-query response (a matrix), or the :class:`PrometheusError` it amounts to."""
    document = _document(status, body, secrets=secrets)
    try:
        if not isinstance(document, dict) or document.get("status") != "success":
            raise ValueError("status is not 'success'")
        data = document["data"]
        if data["resultType"] != "matrix" or not isinstance(data["result"], list):
            raise ValueError(f"resultType is {str(data['resultType'])[:20]!r}, not matrix")
        return [
            RangeSeries(labels=_labels(element["metric"]), points=[_pair(p) for p in element.get("values") or []])
            for element in data["result"]
        ]
    except (KeyError, TypeError, ValueError) as e:
        raise PrometheusBadResponse(
            f"unexpected response shape: {sanitize(str(e), secrets=secrets)}", reason="UnexpectedResponse"
        ) from None


# --- the HTTP client ------------------------------------------------------------------------------

_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not _HEADER_NAME.match(name):
            raise ValueError(f"invalid HTTP header name {name!r}")
        if any(c in value for c in "\r\n\x00"):
            raise ValueError(f"HTTP header {name} has a line break or NUL in its value")


def _merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win; header names compare case-insensitively, as HTTP does."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> bytes:
    too_large = PrometheusBadResponse(f"response larger than {limit} bytes", reason="ResponseTooLarge")
    if response.content_length is not None and response.content_length > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class PrometheusClient:
    """:class:`MetricSource` over the Prometheus HTTP API (``POST /api/v1/query``).

    Create one per endpoint and share it: the session pools connections and the semaphore bounds
    queries in flight across all callers. ``close()`` (or ``async with``) releases the session.
    """

    def __init__(
        self,
        *,
        url: str,
        timeout: float = 10.0,
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        basic_auth: tuple[str, str] | None = None,
        ca_pem: str | None = None,
        insecure_skip_verify: bool = False,
        max_concurrency: int = 4,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        base = URL(url)
        if base.scheme not in ("http", "https") or not base.host:
            raise ValueError("url must be an absolute http:// or https:// URL")
        if base.user is not None or base.password is not None:
            raise ValueError("url must not carry credentials; use bearer_token or basic_auth")
        if base.query_string or base.fragment:
            raise ValueError("url must not have a query string or fragment")
        if not timeout > 0 or not math.isfinite(timeout):
            raise ValueError("timeout must be a positive number of seconds")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if bearer_token is not None and basic_auth is not None:
            raise ValueError("give bearer_token or basic_auth, not both")
        extra = dict(headers or {})
        _check_headers(extra)
        auth_header: dict[str, str] = {}
        if bearer_token is not None:
            auth_header["Authorization"] = f"Bearer {bearer_token}"
        elif basic_auth is not None:
            user, password = basic_auth
            if ":" in user:
                raise ValueError("a basic-auth username must not contain ':'")
            encoded = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            auth_header["Authorization"] = f"Basic {encoded}"
        if auth_header and any(name.lower() == "authorization" for name in extra):
            raise ValueError("an Authorization header conflicts with bearer_token/basic_auth")
        _check_headers(auth_header)
        if base.scheme != "https" and (ca_pem is not None or insecure_skip_verify):
            raise ValueError("ca_pem and insecure_skip_verify need an https:// url")

        self._query_url = base.with_path(base.path.rstrip("/") + "/api/v1/query")
        self._range_url = base.with_path(base.path.rstrip("/") + "/api/v1/query_range")
        # For messages: where we talked to, never with credentials (there are none in the URL).
        self._origin = str(base.with_path(base.path.rstrip("/") or "/"))
        self._timeout = float(timeout)
        self._headers = _merge_headers(extra, auth_header)
        # Masked wherever response text is quoted, in case a proxy echoes the request back. Very
        # short values are left alone: masking them would garble ordinary words.
        own_secrets = [bearer_token, auth_header.get("Authorization", "").partition(" ")[2]]
        if basic_auth is not None:
            own_secrets.append(basic_auth[1])
        self._secrets = tuple(s for s in own_secrets if s and len(s) >= 4)
        self._ssl: ssl.SSLContext | bool = True
        if base.scheme == "https":
            self._ssl = self._tls_context(ca_pem=ca_pem, insecure_skip_verify=insecure_skip_verify)
        self._max_concurrency = max_concurrency
        self._max_response_bytes = max_response_bytes
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._session_or_none: aiohttp.ClientSession | None = None
        self._closed = False

    @staticmethod
    def _tls_context(*, ca_pem: str | None, insecure_skip_verify: bool) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(cadata=ca_pem) if ca_pem else ssl.create_default_context()
        except (ssl.SSLError, ValueError) as e:
            raise ValueError(f"ca_pem is not a usable PEM certificate bundle: {e}") from None
        if insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    @property
    def url(self) -> str:
        return self._origin

    def __repr__(self) -> str:
        return f"PrometheusClient(url={self._origin!r})"

    async def __aenter__(self) -> PrometheusClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release connections; later queries raise ``RuntimeError``."""
        self._closed = True
        session, self._session_or_none = self._session_or_none, None
        if session is not None:
            await session.close()

    def _session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("PrometheusClient is closed")
        # Created on first use because a ClientSession must be made inside the running loop.
        if self._session_or_none is None:
            self._session_or_none = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._max_concurrency, ssl=self._ssl),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session_or_none

    async def query(self, promql: str, *, at: datetime, headers: Mapping[str, str] | None = None) -> list[Sample]:
        """Instant query at ``at``; per-query ``headers`` (a tenant header) override the client's.

        Per-query headers may not set ``Authorization``: credentials belong to the endpoint.
        """
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at must be timezone-aware")
        return await self._query(promql, time=f"{at.timestamp():.3f}", headers=headers)

    async def query_range(
        self,
        promql: str,
        *,
        start: datetime,
        end: datetime,
        step: float,
        headers: Mapping[str, str] | None = None,
        max_response_bytes: int = DEFAULT_MAX_RANGE_RESPONSE_BYTES,
    ) -> list[RangeSeries]:
        """Range query: ``promql`` evaluated at ``start``, ``start + step``, ... up to ``end``.

        At most :data:`MAX_POINTS_PER_SERIES` points per series (Prometheus refuses more); the caller
        splits longer periods.
        """
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        if not step > 0 or (end - start).total_seconds() / step >= MAX_POINTS_PER_SERIES:
            raise ValueError(f"a range query holds fewer than {MAX_POINTS_PER_SERIES} steps; split the period")
        request_headers = self._request_headers(headers)
        form = {
            "query": promql,
            "start": f"{start.timestamp():.3f}",
            "end": f"{end.timestamp():.3f}",
            "step": f"{step:g}",
            "timeout": f"{self._timeout:g}s",
        }
        session = self._session()
        async with self._semaphore:
            status, body = await self._post(
                session, form, request_headers, url=self._range_url, max_bytes=max_response_bytes
            )
        return parse_range_response(status, body, secrets=self._secrets)

    async def is_online(self) -> bool:
        """Whether the endpoint answers ``vector(1)`` correctly (a query, so auth and tenancy count)."""
        try:
            samples = await self._query("vector(1)", time=None, headers=None)
        except PrometheusError as e:
            _log.debug("Prometheus at %s is not online: %s (%s)", self._origin, e, e.reason)
            return False
        return len(samples) == 1 and samples[0].value == 1.0

    def _request_headers(self, headers: Mapping[str, str] | None) -> Mapping[str, str]:
        """The client's headers with a query's own on top; a query may not set Authorization."""
        if not headers:
            return self._headers
        _check_headers(headers)
        if any(name.lower() == "authorization" for name in headers):
            raise ValueError("per-query headers must not set Authorization")
        return _merge_headers(self._headers, headers)

    async def _query(self, promql: str, *, time: str | None, headers: Mapping[str, str] | None) -> list[Sample]:
        request_headers = self._request_headers(headers)
        # Also sent to the server, so it gives up on the query when we do.
        form = {"query": promql, "timeout": f"{self._timeout:g}s"}
        if time is not None:
            form["time"] = time
        session = self._session()
        async with self._semaphore:
            status, body = await self._post(session, form, request_headers)
        return parse_query_response(status, body, secrets=self._secrets)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        form: Mapping[str, str],
        headers: Mapping[str, str],
        *,
        url: URL | None = None,
        max_bytes: int | None = None,
    ) -> tuple[int, bytes]:
        where = f"Prometheus at {self._origin}"
        try:
            async with session.post(
                url or self._query_url,
                data=form,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                allow_redirects=False,
            ) as response:
                return response.status, await _read_bounded(response, max_bytes or self._max_response_bytes)
        except TimeoutError:
            raise PrometheusTimeout(f"{where}: no answer within {self._timeout:g}s") from None
        except aiohttp.ClientSSLError as e:
            raise PrometheusUnreachable(f"{where}: TLS failed: {sanitize(str(e))}", reason="TLSError") from None
        except aiohttp.ClientConnectorError as e:
            raise PrometheusUnreachable(f"{where}: cannot connect: {sanitize(str(e))}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            raise PrometheusUnreachable(
                f"{where}: connection lost: {sanitize(str(e)) or type(e).__name__}", reason="ConnectionLost"
            ) from None
        except aiohttp.ClientError as e:
            raise PrometheusBadResponse(
                f"{where}: malformed HTTP response: {sanitize(str(e)) or type(e).__name__}",
                reason="UnexpectedResponse",
            ) from None
