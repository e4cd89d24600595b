"""Model hosting: one resident model, its state and swaps (:mod:`.host`), the lease a request
holds on it (:mod:`.lease`), and admission control in front of it (:mod:`.admission`)."""

from .admission import Admission
from .host import NOT_REAL_MODE, ModelHost, ModelState
from .lease import Lease

__all__ = ["NOT_REAL_MODE", "Admission", "Lease", "ModelHost", "ModelState"]
