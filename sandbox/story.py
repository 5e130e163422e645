"""``make sandbox`` (``python -m sandbox``): the whole loop on one machine, told as it happens.

It starts S3 (SeaweedFS), a demo model service whose accuracy decays, Prometheus scraping it, a real
Kubernetes control plane (etcd, kube-apiserver, controller manager, scheduler; built once from the Go
modules) with the local kubelet, installs the operator's chart and runs the real operator process as
the chart's ServiceAccount; applies a MetricsEndpoint, a ModelStore and a RetrainPolicy with kubectl; then prints
what happens: the trigger going pending and firing, the
decision, the Job, the new model in S3, the status, and the accuracy recovering with the new model.
It exits 0 when that story is complete (``--keep`` leaves everything running until Ctrl-C) and
stops everything it started. Nothing here is used by the operator itself.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import shutil
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from retrain_operator.domain.numbers import number
from sandbox.cluster import OPERATOR_NAMESPACE, LocalCluster, install_operator, install_tenant
from sandbox.controlplane import ControlPlaneError, build
from sandbox.demo_model import DemoModel, serve
from sandbox.examples import EXAMPLE_NAMESPACES, example_world
from sandbox.processes import Interrupted, OperatorProcess, free_ports, kubectl, stopped_by_signals, venv_bin
from sandbox.prometheus import start_prometheus
from sandbox.s3 import start_seaweedfs

NAMESPACE = "demo"
# The chart in namespaced mode, watching the demo namespace.
CHART_VALUES = {"watchNamespaces": [NAMESPACE]}
BUCKET = "models"


def write_env(path: Path, *, kubeconfig: Path) -> Path:
    """A file to ``source``: this environment's tools first on PATH, and the sandbox cluster as KUBECONFIG."""
    path.write_text(f'export PATH="{venv_bin()}:$PATH"\nexport KUBECONFIG="{kubeconfig}"\n')
    return path


def _crd_dir() -> Path:
    for candidate in (Path(__file__).resolve().parents[1] / "crds", Path.cwd() / "crds"):
        if (candidate / "retrainpolicies.yaml").exists():
            return candidate
    raise SystemExit("error: crds/ not found; run the sandbox from the repository (make sandbox)")


def _training_csv() -> bytes:
    from sklearn.datasets import load_breast_cancer

    frame = load_breast_cancer(as_frame=True).frame.rename(columns={"target": "label"})
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def demo_policy() -> dict[str, Any]:
    """The example churn policy, sped up so the story takes about a minute; its models go to the sandbox's store."""
    return {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "RetrainPolicy",
        "metadata": {"name": "churn", "namespace": NAMESPACE},
        "spec": {
            "model": {
                "name": "churn",
                "registry": {"store": "sandbox", "bucket": BUCKET, "prefix": "churn/"},
            },
            "metrics": {"endpoint": "sandbox", "selector": {"model": "churn"}},
            "evaluation": {"interval": "5s"},
            "triggers": [
                {
                    "name": "accuracy-drop",
                    "for": "10s",
                    "accuracyDecay": {
                        "metric": "model_accuracy",
                        "window": "10s",
                        "baseline": "Model",
                        "fixedBaseline": 0.95,
                        "maxDrop": 0.05,
                        "clearDrop": 0.02,
                    },
                }
            ],
            "decision": {"cooldown": "10m"},
            "training": {
                "builtin": {
                    "data": {"key": "data/churn.csv"},
                    "target": "label",
                    "estimator": "sklearn.linear_model.LogisticRegression",
                    "params": {"max_iter": 5000},
                },
                "deadline": "5m",
            },
        },
    }


def sandbox_store(*, s3_endpoint: str, region: str) -> dict[str, Any]:
    """The sandbox's ModelStore: its SeaweedFS, for the story's namespace and bucket only."""
    return {
        "apiVersion": "retrain.dev/v1alpha1",
        "kind": "ModelStore",
        "metadata": {"name": "sandbox"},
        "spec": {
            "endpoint": s3_endpoint,
            "region": region,
            "addressingStyle": "path",
            "credentialsSecret": {"name": "churn-s3"},
            "allowedNamespaces": [NAMESPACE],
            "buckets": [{"bucket": BUCKET}],
        },
    }


def gated_policy() -> dict[str, Any]:
    """The same model watched by a policy whose retrain costs more than the accuracy it would win back."""
    body = demo_policy()
    body["metadata"]["name"] = "churn-gated"
    body["spec"]["model"]["registry"]["prefix"] = "churn-gated/"
    body["spec"]["triggers"][0]["accuracyDecay"]["baseline"] = "Fixed"
    body["spec"]["decision"].update(
        prices={"cpuHour": 50.0, "perRetrain": 100.0},
        costBenefit={"valuePerAccuracyPointPerDay": 1.0, "horizon": "7d", "estimatedDuration": "10m"},
    )
    return body


def _cluster_of(kubeconfig: Path, workdir: Path) -> tuple[str, Path]:
    """The server URL and CA file of the kubeconfig's current context (the CA written to ``workdir``)."""
    result = kubectl(kubeconfig, "config", "view", "--raw", "--minify", "-o", "json")
    if result.returncode != 0:
        raise ValueError(result.stderr.strip() or "kubectl config view failed")
    cluster = json.loads(result.stdout)["clusters"][0]["cluster"]
    if "certificate-authority" in cluster:
        return str(cluster["server"]), Path(cluster["certificate-authority"])
    if "certificate-authority-data" not in cluster:
        raise ValueError("the current context's cluster names no certificate authority")
    ca = workdir / "cluster-ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    return str(cluster["server"]), ca


def _clean_up(kubeconfig: Path) -> None:
    """On someone else's cluster, remove what the story made for itself (the CRDs and RBAC stay)."""
    kubectl(kubeconfig, "delete", "namespace", NAMESPACE, "--wait=false", "--ignore-not-found")
    kubectl(kubeconfig, "delete", "metricsendpoint", "sandbox", "--ignore-not-found")
    kubectl(kubeconfig, "delete", "modelstore", "sandbox", "--ignore-not-found")


WIDTH = 120


class Narrator:
    """Prints each step with the seconds since the start; a long message wraps, whole, under its first line."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        stamp = f"[{time.monotonic() - self.started:6.1f}s] "
        lines = textwrap.wrap(text, WIDTH, subsequent_indent=" " * (len(stamp) + 2), break_on_hyphens=False)
        print(stamp + "\n".join(lines or [""]), flush=True)


class PolicyStory:
    """What changed in a policy's status since the last look, in the order it happened.

    The operator may take several steps between two looks: a Retrain decision creates the Job, and the
    Job's first watch event wakes the policy at once, so the next look already shows the Job running
    and the decision TrainingInProgress. The Retrain decision is then told from the RetrainStarted
    event (``started``: the message of the event that started a Job), before the Job and before what
    came after it.
    """

    def __init__(self) -> None:
        self.trigger: tuple[Any, ...] | None = None
        self.decision: tuple[str, str] | None = None
        self.job: str | None = None
        self.retrain: str | None = None

    def lines(
        self,
        status: Mapping[str, Any],
        *,
        started: Callable[[str], str | None],
        stored: Callable[[], Sequence[str]] = tuple,
    ) -> list[str]:
        """The new steps; ``stored`` lists what a finished retrain left in the registry, told after its Job."""
        out: list[str] = []
        for trigger in status.get("triggers") or []:
            value = trigger.get("value")
            state = (trigger.get("state"), None if value is None else round(float(value), 3))
            if self.trigger != state:
                self.trigger = state
                out.append(f"trigger {trigger['name']}: {trigger['state']:<12} {trigger.get('message', '')}")
        decision = status.get("lastDecision") or {}
        job = (status.get("activeJob") or {}).get("name")
        if job and job != self.job:
            self.job = job
            if decision.get("action") != "Retrain":
                message = started(job) or f"started Job {job}"
                out.append(f"decision: Retrain (TriggerFiring): {message}")
                self.decision = ("Retrain", "TriggerFiring")
            else:
                out.append(self._decision(decision))
            out.append(f"training Job {job} created; its Pod runs `retrain-operator train`")
        last = status.get("lastRetrain") or {}
        if last and last.get("job") != self.retrain:
            self.retrain = last.get("job")
            out.append(f"Job {last.get('job')} {last.get('outcome')}: {last.get('message')}")
            out.extend(f"  {line}" for line in stored())
            current = status.get("model") or {}
            if current:
                out.append(
                    f"status.model: version {current.get('version')}, {current.get('metric')} "
                    f"{number(current.get('score'))}, {current.get('uri')}"
                )
        if decision and (decision.get("action"), decision.get("reason")) != self.decision:
            out.append(self._decision(decision))
        return out

    def _decision(self, decision: Mapping[str, Any]) -> str:
        self.decision = (str(decision.get("action")), str(decision.get("reason")))
        return f"decision: {decision.get('action')} ({decision.get('reason')}): {decision.get('message')}"


def events_table(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """Events oldest first, with the object each is about (two policies' events look alike otherwise), and
    the whole message, wrapped under its row."""
    rows = sorted(items, key=lambda e: int((e.get("metadata") or {}).get("resourceVersion") or 0))
    objects = [
        f"{(e.get('involvedObject') or {}).get('kind', '').lower()}/{(e.get('involvedObject') or {}).get('name', '')}"
        for e in rows
    ]
    width = max([len("OBJECT"), *map(len, objects)])
    out = [f"  {'OBJECT':<{width}} {'TYPE':<8} {'REASON':<20} MESSAGE"]
    indent = " " * (2 + width + 1 + 8 + 1 + 20 + 1)
    for event, name in zip(rows, objects, strict=True):
        head = f"  {name:<{width}} {event.get('type', ''):<8} {event.get('reason', ''):<20} "
        message = textwrap.wrap(str(event.get("message", "")), max(40, WIDTH - len(indent)), break_on_hyphens=False)
        out.append(head + (message[0] if message else ""))
        out.extend(indent + line for line in message[1:])
    return out


def _started_message(kubeconfig: Path, job: str) -> str | None:
    """The message of the RetrainStarted event for ``job``: the Retrain decision in the operator's words."""
    result = kubectl(
        kubeconfig, "get", "events", "-n", NAMESPACE, "--field-selector", "reason=RetrainStarted", "-o", "json"
    )
    if result.returncode != 0:
        return None
    for event in json.loads(result.stdout).get("items", []):
        message = str(event.get("message", ""))
        if job in message:
            return message
    return None


@contextlib.contextmanager
def _demo_service(model: DemoModel, port: int) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=serve, kwargs={"model": model, "port": port, "stop": stop}, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def main(argv: list[str] | None = None) -> int:
    """The story; SIGINT or SIGTERM at any point stops everything started so far, within seconds."""
    try:
        with stopped_by_signals():
            return _story(argv)
    except Interrupted as stop:
        print(f"\n{stop}: stopped everything the sandbox started", file=sys.stderr, flush=True)
        return 128 + stop.signum


def _story(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, default=Path(".sandbox"), help="scratch directory (wiped first)")
    parser.add_argument("--keep", action="store_true", help="keep everything running after the story completes")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    parser.add_argument(
        "--kubeconfig",
        type=Path,
        default=None,
        help="use this cluster (kind, minikube, ...) instead of starting a local control plane",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address at which that cluster's Pods reach this machine; S3 listens there"
    )
    parser.add_argument(
        "--trainer-image",
        default="retrain-operator:dev",
        help="the training Jobs' image; on your own cluster one that it can pull or has loaded",
    )
    args = parser.parse_args(argv)
    workdir: Path = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    n = Narrator()
    with contextlib.ExitStack() as stack:
        s3_server = stack.enter_context(start_seaweedfs(workdir / "s3", host=args.host))
        import boto3

        s3 = boto3.client(
            "s3",
            endpoint_url=s3_server.endpoint,
            aws_access_key_id=s3_server.access_key,
            aws_secret_access_key=s3_server.secret_key,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        s3.put_object(Bucket=BUCKET, Key="data/churn.csv", Body=_training_csv())
        n.say(f"S3 (SeaweedFS) at {s3_server.endpoint}: s3://{BUCKET}/data/churn.csv holds the training data")

        model = DemoModel(namespace=NAMESPACE, model="churn", bucket=BUCKET, prefix="churn/", s3=s3)
        [port] = free_ports(1)
        stack.enter_context(_demo_service(model, port))
        prom = stack.enter_context(start_prometheus(workdir / "prometheus", scrape_targets=[f"127.0.0.1:{port}"]))
        n.say(
            f"demo model serving at 127.0.0.1:{port}, accuracy {model.accuracy():.3f} and decaying; "
            f"Prometheus at {prom.url} scrapes it every second"
        )

        if args.kubeconfig is None:
            n.say("control plane: building etcd and Kubernetes from the Go modules if not cached (once, minutes)")
            try:
                bin_dir = build()
                cluster = stack.enter_context(
                    LocalCluster(
                        workdir=workdir / "cluster",
                        bin_dir=bin_dir,
                        env_overrides={"PATH": f"{venv_bin()}:/usr/bin:/bin"},
                    )
                )
            except ControlPlaneError as error:
                print(f"error: {error}", file=sys.stderr)
                return 1
            kubeconfig = cluster.kubeconfig
            assert cluster.control_plane.pki is not None
            server, ca = cluster.url, cluster.control_plane.pki.ca_cert
            n.say(
                f"Kubernetes API server at {server} (etcd, controller manager, scheduler, local kubelet); "
                f"admin kubeconfig {kubeconfig}"
            )
        else:
            kubeconfig = args.kubeconfig.resolve()
            try:
                server, ca = _cluster_of(kubeconfig, workdir)
            except ValueError as error:
                print(f"error: --kubeconfig {kubeconfig}: {error}", file=sys.stderr)
                return 1
            n.say(
                f"your cluster at {server} (kubeconfig {kubeconfig}); Jobs run {args.trainer_image} and reach "
                f"S3 at {s3_server.endpoint}"
            )
            stack.callback(_clean_up, kubeconfig)

        def apply(docs: list[dict[str, Any]] | None = None, path: Path | None = None) -> None:
            args_ = ["apply", "-f", str(path) if path else "-"]
            result = kubectl(kubeconfig, *args_, input=None if path else yaml.safe_dump_all(docs or []))
            if result.returncode != 0:
                raise SystemExit(f"kubectl apply failed: {result.stderr}")
            for line in result.stdout.splitlines():
                n.say(f"kubectl: {line}")

        apply(path=_crd_dir())
        kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(_crd_dir()))
        operator_kubeconfig = install_operator(
            kubeconfig, values=CHART_VALUES, kubeconfig_path=workdir / "operator.kubeconfig", server=server, ca=ca
        )
        n.say(
            f"chart installed (RBAC, ServiceAccount); the operator authenticates as that ServiceAccount "
            f"({operator_kubeconfig})"
        )
        apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}])
        account = install_tenant(kubeconfig, values=CHART_VALUES, namespace=NAMESPACE)
        apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "churn-s3", "namespace": NAMESPACE},
                    "stringData": {
                        "AWS_ACCESS_KEY_ID": s3_server.access_key,
                        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                    },
                },
                {
                    "apiVersion": "retrain.dev/v1alpha1",
                    "kind": "MetricsEndpoint",
                    "metadata": {"name": "sandbox"},
                    "spec": {"url": prom.url, "namespaceLabel": "namespace", "allowedNamespaces": [NAMESPACE]},
                },
                sandbox_store(s3_endpoint=s3_server.endpoint, region=s3_server.region),
            ]
        )
        watched = [NAMESPACE]
        if args.kubeconfig is None:
            # On its own control plane only: on someone else's cluster, team-a and a "default" endpoint and
            # store may well exist already, and are not the sandbox's to take.
            apply(
                example_world(
                    prometheus_url=prom.url,
                    s3_endpoint=s3_server.endpoint,
                    region=s3_server.region,
                    access_key=s3_server.access_key,
                    secret_key=s3_server.secret_key,
                )
            )
            for namespace in EXAMPLE_NAMESPACES:
                install_tenant(kubeconfig, values=CHART_VALUES, namespace=namespace)
            watched += EXAMPLE_NAMESPACES
            n.say(
                f"the examples' world: namespaces {', '.join(EXAMPLE_NAMESPACES)}, MetricsEndpoint default "
                "(this Prometheus) and ModelStore default (this S3), so examples/*-policy.yaml and "
                "examples/team-budget.yaml apply as they are"
            )
        operator = OperatorProcess(
            kubeconfig=operator_kubeconfig,
            log_path=workdir / "operator.log",
            args=[
                "--operator-namespace",
                OPERATOR_NAMESPACE,
                "--trainer-image",
                args.trainer_image,
                "--training-service-account",
                account,
                *(f"--namespace={namespace}" for namespace in watched),
            ],
        )
        stack.callback(operator.stop, timeout=5.0)  # first: a signal right after the start must still stop it
        operator.start()
        n.say(f"operator started (pid {operator.process.pid if operator.process else '?'}), log {operator.log_path}")
        policy = demo_policy()
        apply([policy, gated_policy()])
        n.say("policy churn: retrain when accuracy over 10s stays more than 0.05 below the model's score for 10s")
        n.say("policy churn-gated: the same trigger, but a retrain costs 104 and an accuracy point is worth 1 a day")

        done = _watch(n, kubeconfig=kubeconfig, operator=operator, s3=s3, timeout=args.timeout, model=model)
        result = kubectl(kubeconfig, "get", "retrainpolicies", "-n", NAMESPACE)
        print("\n$ kubectl get retrainpolicies -n demo\n" + result.stdout, flush=True)
        events = kubectl(kubeconfig, "get", "events", "-n", NAMESPACE, "-o", "json")
        if events.returncode == 0:
            print("$ kubectl get events -n demo")
            for line in events_table(json.loads(events.stdout).get("items", [])):
                print(line)
        if not done:
            print(
                f"\nthe story did not complete in {args.timeout:.0f}s; operator log tail:\n{operator.log()[-4000:]}",
                file=sys.stderr,
            )
            return 1
        print("\nThe loop is complete: decay detected, one Job, a new model in S3, status explains it.")
        if args.keep:
            env = write_env(workdir / "env", kubeconfig=kubeconfig)
            print(
                f"Still running (Ctrl-C to stop). In another shell:\n"
                f"  source {env}    # PATH gets {venv_bin()} (retrain-operator, kubectl), KUBECONFIG this cluster\n"
                "  kubectl get rp -A\n"
                "  kubectl apply -f examples/churn-policy.yaml -f examples/team-budget.yaml \\\n"
                "      -f examples/drift-policy.yaml -f examples/nightly-custom-trainer.yaml",
                flush=True,
            )
            with contextlib.suppress(Interrupted):  # the way to stop it: everything stops, and the exit is 0
                while operator.running:
                    time.sleep(1)
    return 0


def _watch(
    n: Narrator, *, kubeconfig: Path, operator: OperatorProcess, s3: Any, timeout: float, model: DemoModel
) -> bool:
    """Narrate the policy's status until the retrained model is in production and accuracy recovered."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    story = PolicyStory()
    while time.monotonic() < deadline:
        if not operator.running:
            n.say("the operator exited unexpectedly")
            return False
        result = kubectl(kubeconfig, "get", "retrainpolicy", "churn", "-n", NAMESPACE, "-o", "json")
        status = json.loads(result.stdout).get("status") or {} if result.returncode == 0 else {}
        gated = kubectl(kubeconfig, "get", "retrainpolicy", "churn-gated", "-n", NAMESPACE, "-o", "json")
        gated_decision = (
            (json.loads(gated.stdout).get("status") or {}).get("lastDecision") or {} if gated.returncode == 0 else {}
        )
        if gated_decision.get("reason") == "NotWorthRetraining" and not seen.get("gated"):
            seen["gated"] = True
            n.say(f"churn-gated decision: {gated_decision['action']} (NotWorthRetraining): {gated_decision['message']}")

        def stored() -> list[str]:
            listing = s3.list_objects_v2(Bucket=BUCKET, Prefix="churn/versions/").get("Contents", [])
            return [f"s3://{BUCKET}/{obj['Key']} ({obj['Size']} bytes)" for obj in listing]

        for line in story.lines(status, started=lambda job: _started_message(kubeconfig, job), stored=stored):
            n.say(line)
        last = status.get("lastRetrain") or {}
        if last and last.get("outcome") != "Succeeded":
            return False
        trigger_states = [t.get("state") for t in status.get("triggers") or []]
        if last.get("outcome") == "Succeeded" and model.version and trigger_states == ["clear"] and seen.get("gated"):
            n.say(
                f"the demo model now serves version {model.version}; accuracy recovered to "
                f"{model.accuracy():.3f} and the trigger is clear"
            )
            return True
        time.sleep(0.5)
    return False
