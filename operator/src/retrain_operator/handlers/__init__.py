"""kopf handlers; importing this package registers nothing globally (handlers use their own registry)."""
