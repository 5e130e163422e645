"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Why: the operator is judged by how it behaves on a cluster, so the sandbox and the end-to-end tests run
it against the real API server (OpenAPI, strict field validation, CEL rules, RBAC, admission) and the
real Job and garbage-collector controllers, not an emulation of them. The binaries are built from the
official Go modules by ``hack/controlplane/build.sh`` into a cache outside the repository.

Started like a small cluster: certificates and service-account keys generated per run, the API server
with ``--authorization-mode=Node,RBAC`` and its default admission plugins, each controller with its own
service-account credentials. Every component logs to ``<workdir>/logs/<component>.log``; one that does
not come up raises :class:`ControlPlaneError` naming it and its log, within a deadline, never a hang.

Limits: one member each, no kube-proxy (Services route nowhere), no cloud or node-IPAM controllers.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sandbox.processes import free_ports

ROOT: Final = Path(__file__).resolve().parents[1]
BUILD_SCRIPT: Final = ROOT / "hack" / "controlplane" / "build.sh"
COMPONENTS: Final = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
START_ATTEMPTS: Final = 3
SERVICE_CIDR: Final = "10.96.0.0/24"
# Controllers the operator's objects depend on (Jobs, their Pods, owner GC, namespaces, service
# accounts and their tokens, node health), and the ones any cluster runs beside them.
CONTROLLERS: Final = (
    "job",
    "garbagecollector",
    "namespace",
    "serviceaccount",
    "serviceaccount-token",
    "root-ca-cert-publisher",
    "ttl-after-finished",
    "podgc",
    "nodelifecycle",
    "cronjob",
    "replicaset",
    "deployment",
    "resourcequota",
    "clusterrole-aggregation",
    "endpointslice",
)


class ControlPlaneError(RuntimeError):
    """A component could not be built or did not come up; the message names it and its log file."""


def build(*, version: str | None = None, timeout: float = 3600.0) -> Path:
    """The directory of the four binaries, built by ``hack/controlplane/build.sh`` when missing."""
    env = dict(os.environ)
    if version:
        env["K8S"] = version
    try:
        result = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, env=env, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ControlPlaneError(f"building the control plane took longer than {timeout:.0f}s") from error
    if result.returncode != 0:
        raise ControlPlaneError(f"building the control plane failed:\n{result.stderr.strip()[-3000:]}")
    bin_dir = Path(result.stdout.strip().splitlines()[-1])
    missing = [c for c in COMPONENTS if not (bin_dir / c).exists()]
    if missing:
        raise ControlPlaneError(f"the control-plane build left no {', '.join(missing)} in {bin_dir}")
    return bin_dir


# ---------------------------------------------------------------------------------------------
# Certificates


@dataclass(frozen=True)
class Pki:
    """File paths of the generated CA, serving certificate, client certificates and service-account keys."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _certificate(
    *,
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    signer: ec.EllipticCurvePrivateKey,
    ca: bool = False,
    server: bool = False,
    client: bool = False,
    sans: Sequence[x509.GeneralName] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usages = [
            u for u, on in ((ExtendedKeyUsageOID.SERVER_AUTH, server), (ExtendedKeyUsageOID.CLIENT_AUTH, client)) if on
        ]
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _name(common: str, *organizations: str) -> x509.Name:
    return x509.Name(
        [
            *(x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def make_pki(directory: Path) -> Pki:
    """A CA, the API server's serving certificate and the service-account signing key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("retrain-sandbox-ca")
    ca = _certificate(subject=ca_name, issuer=ca_name, public_key=ca_key.public_key(), signer=ca_key, ca=True)
    pki = Pki(
        dir=directory,
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    pki.ca_cert.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.ca_key, ca_key)
    service_ip = next(ipaddress.IPv4Network(SERVICE_CIDR).hosts())
    sans = [
        x509.DNSName("localhost"),
        x509.DNSName("kubernetes"),
        x509.DNSName("kubernetes.default"),
        x509.DNSName("kubernetes.default.svc"),
        x509.DNSName("kubernetes.default.svc.cluster.local"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
        x509.IPAddress(service_ip),
    ]
    serving_key = ec.generate_private_key(ec.SECP256R1())
    serving = _certificate(
        subject=_name("kube-apiserver"),
        issuer=ca_name,
        public_key=serving_key.public_key(),
        signer=ca_key,
        server=True,
        sans=sans,
    )
    pki.serving_cert.write_bytes(serving.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.serving_key, serving_key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.sa_key, sa_key)
    pki.sa_pub.write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pki


def client_certificate(pki: Pki, name: str, *, user: str, groups: Sequence[str] = ()) -> tuple[Path, Path]:
    """A client certificate for ``user`` in ``groups``, signed by the CA: (cert path, key path)."""
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate(
        subject=_name(user, *groups),
        issuer=_name("retrain-sandbox-ca"),
        public_key=key.public_key(),
        signer=ca_key,
        client=True,
    )
    cert_path, key_path = pki.dir / f"{name}.crt", pki.dir / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    ca: Path,
    user: str,
    cert: Path | None = None,
    key: Path | None = None,
    token: str | None = None,
    namespace: str = "default",
) -> Path:
    """A kubeconfig with one cluster, one user (client certificate or bearer token) and one context."""
    credentials: dict[str, str] = {}
    if cert is not None and key is not None:
        credentials = {"client-certificate": str(cert), "client-key": str(key)}
    if token is not None:
        credentials = {"token": token}
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "sandbox",
        "preferences": {},
        "clusters": [{"name": "sandbox", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "sandbox", "context": {"cluster": "sandbox", "user": user, "namespace": namespace}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------------------------
# Processes


# Seconds the control plane has, all components together, to exit after SIGTERM before SIGKILL.
STOP_GRACE = 5.0


@dataclass
class Component:
    """One started binary: its process, log file and how to tell it is ready."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM to the process we started, SIGKILL if it lingers; only ever our own PID."""
        self.terminate()
        self.reap(deadline=time.monotonic() + grace)

    def terminate(self) -> None:
        """SIGTERM to the process we started, if it still runs."""
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    def reap(self, *, deadline: float) -> None:
        """Wait for the process until ``deadline`` (a monotonic time), then SIGKILL it."""
        process = self.process
        if process is None:
            return
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)


class ControlPlane:
    """``with ControlPlane(workdir=...) as cp:`` runs a cluster's control plane until the block ends.

    ``cp.admin_kubeconfig`` is a cluster-admin kubeconfig; ``cp.url`` the API server's URL;
    ``cp.pki`` the CA and keys, for clients that need their own certificate (the local kubelet).
    """

    def __init__(self, *, workdir: Path, bin_dir: Path | None = None, start_timeout: float = 90.0) -> None:
        self.workdir = workdir
        self.bin_dir = bin_dir
        self.start_timeout = start_timeout
        self.components: list[Component] = []
        self.url = ""
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.pki: Pki | None = None

    def __enter__(self) -> ControlPlane:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _binary(self, name: str) -> str:
        assert self.bin_dir is not None
        path = self.bin_dir / name
        if not path.exists():
            raise ControlPlaneError(f"{name} is missing from {self.bin_dir}; run `make controlplane`")
        return str(path)

    def start(self) -> None:
        if self.bin_dir is None:
            self.bin_dir = build()
        for name in COMPONENTS:  # all present, or nothing is started
            self._binary(name)
        # A port picked free can be taken by another process before the component binds it: start again
        # on new ports, a bounded number of times.
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._start_once()
                return
            except ControlPlaneError as error:
                if "address already in use" not in str(error) or attempt == START_ATTEMPTS:
                    raise
                self.stop()
                shutil.rmtree(self.workdir / "etcd", ignore_errors=True)

    def _start_once(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        logs = self.workdir / "logs"
        pki = self.pki = make_pki(self.workdir / "pki")
        etcd_port, etcd_peer, etcd_metrics, api_port, kcm_port, scheduler_port = free_ports(6)
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        self.url = f"https://127.0.0.1:{api_port}"

        etcd = self._start(
            Component(
                "etcd",
                [
                    self._binary("etcd"),
                    "--name",
                    "sandbox",
                    "--data-dir",
                    str(self.workdir / "etcd"),
                    "--listen-client-urls",
                    etcd_url,
                    "--advertise-client-urls",
                    etcd_url,
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{etcd_peer}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{etcd_peer}",
                    "--initial-cluster",
                    f"sandbox=http://127.0.0.1:{etcd_peer}",
                    "--initial-cluster-state",
                    "new",
                    "--listen-metrics-urls",
                    f"http://127.0.0.1:{etcd_metrics}",
                    "--unsafe-no-fsync",
                    "--quota-backend-bytes",
                    str(4 << 30),
                    "--log-level",
                    "warn",
                ],
                logs / "etcd.log",
            )
        )
        self._wait_ready(etcd, f"{etcd_url}/health", expect=b'"health":"true"')

        apiserver = self._start(
            Component(
                "kube-apiserver",
                [
                    self._binary("kube-apiserver"),
                    "--etcd-servers",
                    etcd_url,
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                    "--secure-port",
                    str(api_port),
                    "--tls-cert-file",
                    str(pki.serving_cert),
                    "--tls-private-key-file",
                    str(pki.serving_key),
                    "--client-ca-file",
                    str(pki.ca_cert),
                    "--authorization-mode",
                    "Node,RBAC",
                    # The Node authorizer leaves "a node changes only itself and its own Pods" to this plugin.
                    "--enable-admission-plugins",
                    "NodeRestriction",
                    "--service-account-issuer",
                    "https://kubernetes.default.svc.cluster.local",
                    "--service-account-key-file",
                    str(pki.sa_pub),
                    "--service-account-signing-key-file",
                    str(pki.sa_key),
                    "--service-account-max-token-expiration",
                    "48h",
                    "--service-cluster-ip-range",
                    SERVICE_CIDR,
                    "--endpoint-reconciler-type",
                    "none",
                    "--allow-privileged=false",
                    "--cert-dir",
                    str(self.workdir / "apiserver-certs"),
                    "--profiling=false",
                    "--v",
                    "1",
                ],
                logs / "kube-apiserver.log",
            )
        )
        admin_cert, admin_key = client_certificate(pki, "admin", user="sandbox-admin", groups=["system:masters"])
        write_kubeconfig(
            self.admin_kubeconfig, server=self.url, ca=pki.ca_cert, user="sandbox-admin", cert=admin_cert, key=admin_key
        )
        self._wait_ready(apiserver, f"{self.url}/readyz", client=(admin_cert, admin_key))

        kcm_config = self._component_kubeconfig("kube-controller-manager", "system:kube-controller-manager")
        kcm = self._start(
            Component(
                "kube-controller-manager",
                [
                    self._binary("kube-controller-manager"),
                    "--kubeconfig",
                    str(kcm_config),
                    "--authentication-kubeconfig",
                    str(kcm_config),
                    "--authorization-kubeconfig",
                    str(kcm_config),
                    "--bind-address",
                    "127.0.0.1",
                    "--secure-port",
                    str(kcm_port),
                    "--leader-elect=false",
                    "--use-service-account-credentials",
                    "--controllers",
                    ",".join(CONTROLLERS),
                    "--service-account-private-key-file",
                    str(pki.sa_key),
                    "--root-ca-file",
                    str(pki.ca_cert),
                    "--cert-dir",
                    str(self.workdir / "kcm-certs"),
                    "--cluster-name",
                    "sandbox",
                    "--concurrent-job-syncs",
                    "10",
                    "--profiling=false",
                    "--v",
                    "1",
                ],
                logs / "kube-controller-manager.log",
            )
        )
        scheduler_config = self._component_kubeconfig("kube-scheduler", "system:kube-scheduler")
        scheduler = self._start(
            Component(
                "kube-scheduler",
                [
                    self._binary("kube-scheduler"),
                    "--kubeconfig",
                    str(scheduler_config),
                    "--authentication-kubeconfig",
                    str(scheduler_config),
                    "--authorization-kubeconfig",
                    str(scheduler_config),
                    "--bind-address",
                    "127.0.0.1",
                    "--secure-port",
                    str(scheduler_port),
                    "--leader-elect=false",
                    "--cert-dir",
                    str(self.workdir / "scheduler-certs"),
                    "--profiling=false",
                    "--v",
                    "1",
                ],
                logs / "kube-scheduler.log",
            )
        )
        self._wait_ready(kcm, f"https://127.0.0.1:{kcm_port}/healthz", insecure=True)
        self._wait_ready(scheduler, f"https://127.0.0.1:{scheduler_port}/healthz", insecure=True)

    def _component_kubeconfig(self, name: str, user: str) -> Path:
        assert self.pki is not None
        cert, key = client_certificate(self.pki, name, user=user)
        return write_kubeconfig(
            self.workdir / f"{name}.kubeconfig", server=self.url, ca=self.pki.ca_cert, user=user, cert=cert, key=key
        )

    def user_kubeconfig(self, name: str, *, user: str, groups: Sequence[str] = (), namespace: str = "default") -> Path:
        """A kubeconfig authenticating as ``user`` in ``groups`` with a client certificate."""
        assert self.pki is not None
        cert, key = client_certificate(self.pki, name, user=user, groups=groups)
        return write_kubeconfig(
            self.workdir / f"{name}.kubeconfig",
            server=self.url,
            ca=self.pki.ca_cert,
            user=user,
            cert=cert,
            key=key,
            namespace=namespace,
        )

    def token_kubeconfig(self, path: Path, *, token: str, user: str, namespace: str = "default") -> Path:
        """A kubeconfig that authenticates with a bearer token (e.g. a ServiceAccount's)."""
        assert self.pki is not None
        return write_kubeconfig(path, server=self.url, ca=self.pki.ca_cert, user=user, token=token, namespace=namespace)

    def _start(self, component: Component) -> Component:
        self.components.append(component)
        try:
            component.start()
        except OSError as error:
            raise ControlPlaneError(f"{component.name} could not start ({error}); see {component.log_path}") from error
        return component

    def _wait_ready(
        self,
        component: Component,
        url: str,
        *,
        expect: bytes | None = None,
        client: tuple[Path, Path] | None = None,
        insecure: bool = False,
    ) -> None:
        context: ssl.SSLContext | None = None
        if url.startswith("https"):
            assert self.pki is not None
            context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
            if insecure:  # the controller manager and scheduler serve self-signed certificates
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if client is not None:
                context.load_cert_chain(str(client[0]), str(client[1]))
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while True:
            if not component.running:
                raise ControlPlaneError(
                    f"{component.name} exited with code {component.process.returncode if component.process else '?'} "
                    f"before it was ready; see {component.log_path}\n{component.tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=5, context=context) as response:
                    body = response.read()
                    if response.status == 200 and (expect is None or expect in body):
                        return
                    last = f"HTTP {response.status}: {body[:200]!r}"
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{component.name} was not ready at {url} within {self.start_timeout:.0f}s (last: {last}); "
                    f"see {component.log_path}\n{component.tail()}"
                )
            time.sleep(0.2)

    def stop(self, *, grace: float = STOP_GRACE) -> None:
        """Every component told to stop at once, and killed if still running after ``grace`` seconds in all.

        At once, not one after the other: a component waiting on one already gone (the API server on
        etcd, the controller manager on the API server) would otherwise spend its whole grace on retries,
        and a Ctrl-C of the sandbox must end within seconds.
        """
        for component in reversed(self.components):
            component.terminate()
        deadline = time.monotonic() + grace
        for component in reversed(self.components):
            component.reap(deadline=deadline)
        self.components.clear()
