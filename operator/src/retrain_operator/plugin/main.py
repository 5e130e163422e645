"""``kubectl retrain``: ask why a model did or did not retrain, see its retrains, and steer it, from kubectl.

Installed with the package as the ``kubectl-retrain`` command, which kubectl finds on PATH and runs as
``kubectl retrain ...``; it needs no kubectl itself. Reads go through the operator's own typed status;
the writes are exactly what the operator already honours: the ``retrain.dev/force-retrain`` annotation
(a new value forces one retrain past cooldown and the cost-benefit gate, never a budget),
``retrain.dev/rollback-to`` (one promote Job per value) and ``spec.suspend``. Flags follow kubectl's:
``-n``, ``-A``, ``-o json|yaml``, ``--kubeconfig``, ``--context``. Exit status: 0 done, 1 refused or
failed (the message names the object and the fix), 2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import yaml

from retrain_operator.domain.decision import FORCE_ANNOTATION, ROLLBACK_ANNOTATION
from retrain_operator.domain.jobs import LABEL_POLICY_UID
from retrain_operator.plugin import views
from retrain_operator.plugin.kube import Kube, PluginError, connect
from retrain_operator.plugin.registry import read_registry
from retrain_operator.registry import check_version_id

COMMANDS = ("list", "why", "history", "force", "rollback", "suspend", "resume")


def _common(parser: argparse.ArgumentParser, *, top: bool) -> None:
    # The same flags before and after the command, as kubectl takes them: the command's copy leaves the
    # value alone unless it is given there.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("-n", "--namespace", default=default, help="the namespace (default: the context's, or default)")
    parser.add_argument(
        "--kubeconfig", default=default, help="path to the kubeconfig (default: $KUBECONFIG, ~/.kube/config)"
    )
    parser.add_argument("--context", default=default, help="the kubeconfig context to use (default: the current one)")
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "json", "yaml"),
        default="table" if top else argparse.SUPPRESS,
        help="output format: a table or text for people (default), json or yaml",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kubectl retrain",
        description="Ask why a model did or did not retrain, see its retrains, and steer it.",
    )
    _common(parser, top=True)
    parser.add_argument("-A", "--all-namespaces", action="store_true", default=False, help="list in every namespace")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, *, policy: bool = True) -> argparse.ArgumentParser:
        cmd = sub.add_parser(name, help=help, description=help)
        _common(cmd, top=False)
        cmd.add_argument("-A", "--all-namespaces", action="store_true", default=argparse.SUPPRESS, help="list only")
        if policy:
            cmd.add_argument("policy", metavar="POLICY", help="the RetrainPolicy's name")
        return cmd

    command("list", "policies with phase, last decision, model version and next evaluation", policy=False)
    command(
        "why",
        "the last decision with every trigger's value, threshold, state and since, cooldown, budgets and cost-benefit",
    )
    hist = command(
        "history", "the retrains: trigger, duration, cost, version, promoted or not (status, Jobs, registry)"
    )
    hist.add_argument("--no-registry", action="store_true", help="do not read the model registry (S3)")
    force = command(
        "force", f"retrain at the next evaluation, past cooldown and the cost-benefit gate ({FORCE_ANNOTATION})"
    )
    force.add_argument(
        "--value", default=None, help="the annotation's value (default: the current time); each new value acts once"
    )
    rollback = command("rollback", f"make an existing version the champion again ({ROLLBACK_ANNOTATION})")
    rollback.add_argument(
        "--to", required=True, metavar="VERSION", help="the version to promote (kubectl retrain history lists them)"
    )
    command("suspend", "stop starting retrains (spec.suspend: true)")
    command("resume", "start retrains again (spec.suspend: false)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.all_namespaces and args.command != "list":
        parser.error(f"-A/--all-namespaces applies to list only; {args.command} acts on one policy (use -n)")
    try:
        connection = connect(kubeconfig=args.kubeconfig, context=args.context)
        kube = Kube(connection.api)
        namespace = args.namespace or connection.namespace
        now = datetime.now(UTC)
        handler = {
            "list": _list,
            "why": _why,
            "history": _history,
            "force": _force,
            "rollback": _rollback,
            "suspend": _suspend,
            "resume": _suspend,
        }[args.command]
        return handler(kube, args, namespace=namespace, now=now)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _emit(args: argparse.Namespace, structure: Any, text: str) -> None:
    if args.output == "json":
        print(json.dumps(structure, indent=2, sort_keys=False))
    elif args.output == "yaml":
        print(yaml.safe_dump(structure, sort_keys=False).rstrip())
    else:
        print(text)


def _list(kube: Kube, args: argparse.Namespace, *, namespace: str, now: datetime) -> int:
    policies = kube.list_policies(None if args.all_namespaces else namespace)
    rows = sorted((views.summary(p, now=now) for p in policies), key=lambda r: (str(r["namespace"]), str(r["name"])))
    if not rows and args.output == "table":
        where = "any namespace" if args.all_namespaces else f"namespace {namespace}"
        print(f"No RetrainPolicies found in {where}.", file=sys.stderr)
        return 0
    _emit(args, {"items": rows}, views.list_table(rows, all_namespaces=args.all_namespaces, now=now))
    return 0


def _why(kube: Kube, args: argparse.Namespace, *, namespace: str, now: datetime) -> int:
    policy = kube.get_policy(namespace, args.policy)
    budget_name = ((policy.get("spec") or {}).get("decision") or {}).get("budget")
    budget = kube.get_budget(namespace, str(budget_name)) if isinstance(budget_name, str) else None
    view = views.explain(policy, budget=budget, now=now)
    _emit(args, view, views.explain_text(view, now=now))
    return 0


def _history(kube: Kube, args: argparse.Namespace, *, namespace: str, now: datetime) -> int:
    policy = kube.get_policy(namespace, args.policy)
    uid = str((policy.get("metadata") or {}).get("uid") or "")
    jobs = kube.list_jobs(namespace, f"{LABEL_POLICY_UID}={uid}") if uid else []
    ledgers: list[Mapping[str, Any]] = [dict((policy.get("status") or {}).get("spending") or {})]
    budget_name = ((policy.get("spec") or {}).get("decision") or {}).get("budget")
    if isinstance(budget_name, str):
        budget = kube.get_budget(namespace, budget_name)
        if budget is not None:
            ledgers.append(dict(budget.get("status") or {}))
    registry = None if args.no_registry else read_registry(kube, policy)
    view = views.history(policy, jobs=jobs, ledgers=ledgers, registry=registry, now=now)
    _emit(args, view, views.history_text(view, now=now))
    return 0


def _written(args: argparse.Namespace, policy: Mapping[str, Any], text: str) -> None:
    _emit(args, dict(policy), text)


def _force(kube: Kube, args: argparse.Namespace, *, namespace: str, now: datetime) -> int:
    policy = kube.get_policy(namespace, args.policy)
    annotations = (policy.get("metadata") or {}).get("annotations") or {}
    value = args.value or now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    status = views.status_of(policy)
    if value in (annotations.get(FORCE_ANNOTATION), status.last_override):
        raise PluginError(
            f"{FORCE_ANNOTATION}={value!r} was already used on {namespace}/{args.policy}; each value forces once, "
            "give a new --value (or none: the current time)"
        )
    patched = kube.patch_policy(namespace, args.policy, {"metadata": {"annotations": {FORCE_ANNOTATION: value}}})
    notes = []
    if (policy.get("spec") or {}).get("suspend"):
        notes.append("the policy is suspended: the force acts once it is resumed")
    if status.active_job is not None:
        notes.append(f"Job {status.active_job.name} is running: the force acts once it ends")
    text = (
        f"retrainpolicy {namespace}/{args.policy}: {FORCE_ANNOTATION}={value} set; the operator retrains at its next "
        "evaluation (cooldown and cost-benefit gate bypassed, budgets still apply)"
    )
    _written(args, patched, text + "".join(f"\nnote: {n}" for n in notes))
    return 0


def _rollback(kube: Kube, args: argparse.Namespace, *, namespace: str, now: datetime) -> int:
    version = args.to
    try:
        check_version_id(version)
    except ValueError as exc:
        raise PluginError(f"--to: {exc}") from None
    policy = kube.get_policy(namespace, args.policy)
    status = views.status_of(policy)
    if status.last_rollback_request == version:
        raise PluginError(
            f"{ROLLBACK_ANNOTATION}={version} was already acted on for {namespace}/{args.policy} "
            f"({status.last_rollback.outcome if status.last_rollback else 'recorded'}); the operator acts on a value "
            "once: roll back to another version first"
        )
    if status.model is not None and status.model.version == version:
        raise PluginError(f"version {version} is already the champion of {namespace}/{args.policy}")
    registry = read_registry(kube, policy)
    notes = []
    if registry.problem is None:
        if version not in registry.versions:
            known = ", ".join(sorted(registry.versions)[-10:]) or "none"
            raise PluginError(
                f"no such version {version!r} in {registry.location} (a complete version has its metadata.json); "
                f"the newest complete versions: {known}"
            )
        if registry.champion == version:
            raise PluginError(f"version {version} is already the champion in {registry.location}")
    else:
        notes.append(f"could not check the version in the registry ({registry.problem}); the promote Job checks it")
    patched = kube.patch_policy(namespace, args.policy, {"metadata": {"annotations": {ROLLBACK_ANNOTATION: version}}})
    if status.active_job is not None:
        notes.append(f"Job {status.active_job.name} is running: the rollback starts once it ends")
    if (policy.get("spec") or {}).get("suspend"):
        notes.append("the policy is suspended: the rollback starts once it is resumed")
    text = (
        f"retrainpolicy {namespace}/{args.policy}: {ROLLBACK_ANNOTATION}={version} set; the operator starts a Job "
        "that makes it the champion (kubectl retrain why shows the outcome)"
    )
    _written(args, patched, text + "".join(f"\nnote: {n}" for n in notes))
    return 0


def _suspend(kube: Kube, args: argparse.Namespace, *, namespace: str, now: datetime) -> int:
    wanted = args.command == "suspend"
    policy = kube.get_policy(namespace, args.policy)
    if bool((policy.get("spec") or {}).get("suspend")) == wanted:
        state = "suspended" if wanted else "not suspended"
        _written(args, policy, f"retrainpolicy {namespace}/{args.policy} is already {state}; nothing changed")
        return 0
    patched = kube.patch_policy(namespace, args.policy, {"spec": {"suspend": wanted}})
    verb = "suspended: no retrain starts" if wanted else "resumed: retrains start again when a trigger fires"
    _written(args, patched, f"retrainpolicy {namespace}/{args.policy} {verb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
