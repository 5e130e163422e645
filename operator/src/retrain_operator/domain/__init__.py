"""Pure domain: API types, triggers, decisions, status and Job building. No I/O, no clocks: ``now`` is passed in."""
