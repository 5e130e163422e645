"""I/O adapters: each external system behind a small interface, with a fake for component tests.

Nothing here decides anything; the reconcile layer calls these and the domain layer never imports
them.
"""
