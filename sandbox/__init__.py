"""A Kubernetes stand-in that runs on one machine, for tests and for the local sandbox.

There is no cluster in CI or on a laptop, yet the operator must be exercised against the
semantics it depends on. `apiserver` serves the Kubernetes API from memory with the behaviour of a
real API server (resource versions, the status subresource, optimistic concurrency, watches that
resume, garbage collection, schema validation with defaulting and pruning); `kubelet` plays the Job
controller and the kubelet by running each Job's container command as a local process. Both speak
plain HTTP on the loopback interface, so the operator, kubectl and the Python client need no
special code paths. Their limits are listed in each module's docstring.
"""
