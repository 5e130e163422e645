"""The ``kubectl retrain`` plugin: a person's view of the operator's decisions, and the levers it already honours.

``main`` parses and dispatches, ``views`` (pure) turns the objects into explanations and tables,
``kube`` is the only module that calls the Kubernetes API and ``registry`` the only one that reads S3.
It sits beside ``cli`` at the top of the layers: it reads the domain's typed status, never the
reconciliation or the handlers.
"""
