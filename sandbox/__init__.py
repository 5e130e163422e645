"""The local loop on one machine, for the tests and the sandbox (``python -m sandbox``); not part of the product.

`controlplane` builds and starts a real Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) on loopback; `kubelet` is a node agent that runs the Pods
bound to its Node as local processes and reports them through the API; `cluster` puts the two
together and installs the operator from its chart; `prometheus` and `s3` run Debian's Prometheus and
SeaweedFS; `story` is the sandbox's narrated demo. Their limits are listed in each module's docstring.
"""
