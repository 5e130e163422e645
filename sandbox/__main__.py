"""``python -m sandbox`` (what ``make sandbox`` runs): the whole loop on one machine."""

import sys

from sandbox.story import main

sys.exit(main(sys.argv[1:]))
