"""The ``retrain-operator`` command: run the operator, evaluate a policy offline, or train (the Job's entrypoint)."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import yaml

from retrain_operator.domain.limits import QueryLimits
from retrain_operator.domain.numbers import number
from retrain_operator.settings.durations import DurationError, format_duration, parse_duration
from retrain_operator.settings.estimators import InvalidAllowlist, parse_allowlist

DEFAULT_TRAINER_IMAGE = "retrain-operator:0.1.0"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retrain-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current kubeconfig or in-cluster config")
    run.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"))
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        help="watch only this namespace (repeatable); default: all namespaces",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", default=True)
    run.add_argument(
        "--operator-namespace",
        default=os.environ.get("POD_NAMESPACE", "retrain-system"),
        help="namespace of the Secrets that MetricsEndpoints name",
    )
    run.add_argument("--trainer-image", default=os.environ.get("RETRAIN_TRAINER_IMAGE", DEFAULT_TRAINER_IMAGE))
    run.add_argument(
        "--training-service-account",
        default="default",
        help="service account of every training pod; policies cannot choose another",
    )
    run.add_argument(
        "--allowed-image-prefix",
        action="append",
        default=[],
        help="registries a policy's own training image may come from (repeatable); default: any",
    )
    run.add_argument(
        "--default-model-store",
        default=None,
        help="ModelStore of policies that name none in spec.model.registry.store; default: none (they must name one)",
    )
    run.add_argument(
        "--stuck-pod-timeout",
        type=float,
        default=300.0,
        help="seconds a training pod may wait in an error state (a missing Secret, an image that cannot be "
        "pulled) before its Job is ended and recorded as failed with that cause",
    )
    run.add_argument(
        "--estimator-allowlist",
        default=os.environ.get("RETRAIN_ESTIMATOR_ALLOWLIST", ""),
        help="module prefixes besides sklearn whose estimators the built-in trainer may import, comma-separated "
        "(e.g. xgboost,lightgbm.sklearn); checked up front and handed to every training Job",
    )
    limits = run.add_argument_group(
        "query ceilings", "the most a policy may ask of Prometheus; a policy over one is Valid=False naming it"
    )
    defaults = QueryLimits()
    limits.add_argument(
        "--max-query-range",
        type=_duration,
        default=format_duration(defaults.max_range),
        help="longest span of history one built-in query may read (for + window, a drift reference's offset + "
        "window, a dataVolume count since training), default %(default)s",
    )
    limits.add_argument("--max-for", type=_duration, default=format_duration(defaults.max_for), help="largest for")
    limits.add_argument(
        "--max-window",
        type=_duration,
        default=format_duration(defaults.max_window),
        help="largest averaging or drift window",
    )
    limits.add_argument(
        "--max-offset",
        type=_duration,
        default=format_duration(defaults.max_offset),
        help="largest drift reference offset",
    )
    limits.add_argument(
        "--max-drift-series",
        type=int,
        default=defaults.max_drift_series,
        help="most bucket series (features x buckets) one drift comparison may read for one policy",
    )
    run.add_argument("--metrics-port", type=int, default=0, help="serve the operator's metrics; 0 disables")
    run.add_argument("--liveness", default=None, help="kopf liveness endpoint, e.g. http://0.0.0.0:8081/healthz")
    run.add_argument(
        "--leader-election",
        action="store_true",
        help="run several replicas: only the holder of a Lease in --operator-namespace reconciles",
    )
    run.add_argument("--lease-name", default="retrain-operator", help="name of the leader-election Lease")
    run.add_argument("--lease-seconds", type=float, default=15.0, help="how long a Lease lasts without renewal")
    run.add_argument("--max-parallel", type=int, default=32)
    run.add_argument(
        "--scheduling",
        choices=("aligned", "rolling"),
        default="aligned",
        help="aligned (default): policies that share a query template are due on the same ticks of their "
        "interval and read with one batched query; rolling: each policy one interval after its last evaluation",
    )
    run.add_argument(
        "--log-level",
        default=os.environ.get("LOG_LEVEL", "INFO"),
        help="DEBUG also shows kopf's line for every watch event a handler took (default %(default)s)",
    )
    run.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("LOG_FORMAT", "text"),
        help="text, or json: one JSON object per line (time, level, logger, message, object, exception)",
    )

    ev = sub.add_parser("evaluate", help="evaluate a policy once against Prometheus, without a cluster")
    ev.add_argument("-f", "--filename", required=True, help="the RetrainPolicy YAML (first RetrainPolicy in it)")
    ev.add_argument("--prometheus-url", required=True)
    ev.add_argument("--at", default=None, help="evaluation time, RFC 3339; default now")
    ev.add_argument("--namespace-label", default=None, help="add <label>=<policy namespace> to built-in queries")
    ev.add_argument(
        "--model-trained-at",
        default=None,
        help="when the current model was trained, RFC 3339 (dataVolume counts new samples since then); default: "
        "the file's status.model.trainedAt, else its metadata.creationTimestamp",
    )
    ev.add_argument("-o", "--output", choices=("text", "json"), default="text")

    bt = sub.add_parser(
        "backtest",
        help="replay a policy's decisions over a period of Prometheus history, creating nothing",
        description="Replays the operator's decisions at the policy's interval from --from to --to (at most 90 days): "
        "triggers with for, clear levels and missing data, cooldown, one training at a time, budgets, the "
        "cost-benefit gate, dry run. History is read with range queries, one per query template per piece of "
        "11,000 points. The history does not know how a retrain would have changed the metrics after it.",
    )
    bt.add_argument("-f", "--filename", required=True, help="the RetrainPolicy YAML (first RetrainPolicy in it)")
    bt.add_argument("--prometheus-url", required=True)
    bt.add_argument("--from", dest="start", required=True, help="start of the period, RFC 3339")
    bt.add_argument("--to", dest="end", default=None, help="end of the period, RFC 3339; default now")
    bt.add_argument("--budget", default=None, help="the RetrainBudget YAML the policy names in spec.decision.budget")
    bt.add_argument("--namespace-label", default=None, help="add <label>=<policy namespace> to built-in queries")
    bt.add_argument("--query-timeout", type=float, default=120.0, help="seconds one range query may take")
    bt.add_argument("--plot", default=None, metavar="FILE.png", help="draw metrics, thresholds, states and retrains")
    bt.add_argument("-o", "--output", choices=("text", "json"), default="text")

    train = sub.add_parser("train", help="the built-in trainer (the training Job's entrypoint)", add_help=False)
    train.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def _duration(text: str) -> str:
    """An argparse type: a duration as the API writes it, kept as text (parsed where it is used)."""
    try:
        parse_duration(text)
    except DurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The trainer parses its own options (including --help), so it gets the rest of the line untouched.
    if argv[:1] == ["train"]:
        from retrain_operator.trainer.main import main as train_main

        return int(train_main(argv[1:]))
    args = _parser().parse_args(argv)
    if args.command == "evaluate":
        return _evaluate(args)
    if args.command == "backtest":
        return _backtest(args)
    return _run(args)


def _load_policy(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        for doc in yaml.safe_load_all(handle):
            if isinstance(doc, dict) and doc.get("kind") == "RetrainPolicy":
                return doc
    raise SystemExit(f"error: {path} holds no RetrainPolicy (kind: RetrainPolicy)")


def _evaluate(args: argparse.Namespace) -> int:
    from retrain_operator.domain.api import InvalidSpec
    from retrain_operator.reconcile.offline import evaluate_policy

    body = _load_policy(args.filename)
    try:
        at = _time("--at", args.at) or datetime.now(UTC)
        trained_at = _time("--model-trained-at", args.model_trained_at)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if trained_at is not None and trained_at > at:
        print(
            f"error: --model-trained-at {args.model_trained_at} is after the evaluation time {at.isoformat()}; "
            "give a time before --at",
            file=sys.stderr,
        )
        return 2
    try:
        result = asyncio.run(
            evaluate_policy(
                body,
                prometheus_url=args.prometheus_url,
                at=at,
                namespace_label=args.namespace_label,
                model_trained_at=trained_at,
            )
        )
    except InvalidSpec as exc:
        if args.output == "json":
            print(json.dumps({"error": "InvalidSpec", "problems": [str(p) for p in exc.problems]}))
        else:
            print("invalid policy:\n" + "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
        return 2
    if args.output == "json":
        print(json.dumps(result, default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v)))
        return 0
    print(f"policy {result['policy']} at {result['at']}")
    for t in result["triggers"]:
        since = ""
        if t["since"]:
            since = f" since{' at or before' if t.get('sinceAtOrBefore') else ''} {t['since']}"
        print(
            f"  {t['name']:<20} {t['type']:<14} {t['state']:<13} value={number(t['value'])} "
            f"threshold={number(t['threshold'])}{since}"
        )
        print(f"  {'':<20} {t['message']}")
    d = result["decision"]
    print(f"decision: {d['action']} ({d['reason']}): {d['message']}")
    return 0


def _time(option: str, text: str | None) -> datetime | None:
    """An RFC 3339 time given on the command line (UTC when it names no zone), or None."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{option} {text!r} is not an RFC 3339 time, e.g. 2026-11-27T10:00:00Z") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _time_flag(flag: str, text: str | None) -> datetime:
    """An RFC 3339 time flag that defaults to now; a bad one ends the command naming the flag."""
    try:
        return _time(flag, text) or datetime.now(UTC)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _backtest(args: argparse.Namespace) -> int:
    from retrain_operator.adapters.prometheus import PrometheusClient
    from retrain_operator.backtest_report import plot, table
    from retrain_operator.domain.api import InvalidSpec
    from retrain_operator.reconcile.backtest import BacktestError, backtest

    body = _load_policy(args.filename)
    start, end = _time_flag("--from", args.start), _time_flag("--to", args.end)
    budget = None
    if args.budget:
        try:
            with open(args.budget, encoding="utf-8") as handle:
                budget = next(
                    (d for d in yaml.safe_load_all(handle) if isinstance(d, dict) and d.get("kind") == "RetrainBudget"),
                    None,
                )
        except (OSError, yaml.YAMLError) as exc:
            print(f"error: --budget {args.budget}: {exc}", file=sys.stderr)
            return 2
        if budget is None:
            print(f"error: --budget {args.budget} holds no RetrainBudget (kind: RetrainBudget)", file=sys.stderr)
            return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib: pip install 'retrain-operator[plot]'", file=sys.stderr)
            return 2

    async def replay() -> Any:
        client = PrometheusClient(url=args.prometheus_url.rstrip("/"), timeout=args.query_timeout, max_concurrency=4)
        try:
            return await backtest(
                body, source=client, start=start, end=end, budget=budget, namespace_label=args.namespace_label
            )
        finally:
            await client.close()

    try:
        result = asyncio.run(replay())
    except InvalidSpec as exc:
        print("invalid policy or budget:\n" + "\n".join(f"  {p}" for p in exc.problems), file=sys.stderr)
        return 2
    except BacktestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.plot:
        plot(result, args.plot)
    if args.output == "json":
        print(
            json.dumps(result.to_dict(), default=lambda v: None if isinstance(v, float) and math.isnan(v) else str(v))
        )
    else:
        print(table(result))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from retrain_operator.adapters.kubernetes import ApiKubeClient
    from retrain_operator.handlers import logs
    from retrain_operator.handlers.operator import registry
    from retrain_operator.reconcile import telemetry
    from retrain_operator.reconcile.engine import Reconciler
    from retrain_operator.reconcile.leader import LeaderElector
    from retrain_operator.reconcile.observe import Observer
    from retrain_operator.reconcile.scheduler import Endpoints, Scheduler, Stores

    try:
        logs.configure(level=args.log_level, fmt=args.log_format)
    except ValueError as exc:
        print(f"error: --log-level/--log-format: {exc}", file=sys.stderr)
        return 2
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig
    kube = ApiKubeClient.from_environment(kubeconfig=args.kubeconfig)

    endpoints = Endpoints(kube=kube, operator_namespace=args.operator_namespace)
    try:
        allowlist = parse_allowlist(args.estimator_allowlist)
    except InvalidAllowlist as exc:
        print(f"error: --estimator-allowlist: {exc}", file=sys.stderr)
        return 2
    limits = QueryLimits(
        max_range=parse_duration(args.max_query_range),
        max_for=parse_duration(args.max_for),
        max_window=parse_duration(args.max_window),
        max_offset=parse_duration(args.max_offset),
        max_drift_series=args.max_drift_series,
    )

    recorder = telemetry.Telemetry()
    reconciler = Reconciler(
        kube=kube,
        trainer_image=args.trainer_image,
        service_account=args.training_service_account,
        telemetry=recorder,
        stuck_after=args.stuck_pod_timeout,
        estimator_allowlist=allowlist,
    )
    elector = None
    if args.leader_election:
        identity = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        elector = LeaderElector(
            kube=kube,
            namespace=args.operator_namespace,
            name=args.lease_name,
            identity=identity,
            lease_seconds=args.lease_seconds,
        )
    scheduler = Scheduler(
        reconciler=reconciler,
        endpoints=endpoints,
        max_parallel=args.max_parallel,
        scheduling=args.scheduling,
        observer=Observer(source_for=endpoints.source, telemetry=recorder, limits=limits),
        elector=elector,
        allowed_images=args.allowed_image_prefix,
        stores=Stores(kube=kube, default=args.default_model_store),
    )
    if args.metrics_port:
        start_http_server(args.metrics_port, addr="0.0.0.0", registry=telemetry.REGISTRY)
    namespaces = args.namespace or None
    asyncio.run(
        kopf.operator(
            registry=registry,
            memo=kopf.Memo(scheduler=scheduler, close=endpoints.close),
            clusterwide=namespaces is None,
            namespaces=namespaces or [],
            standalone=True,
            liveness_endpoint=args.liveness,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
