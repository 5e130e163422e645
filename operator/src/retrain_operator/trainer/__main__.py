"""``python -m retrain_operator.trainer``: the same as ``retrain-operator train``."""

import sys

from retrain_operator.trainer.main import main

sys.exit(main())
