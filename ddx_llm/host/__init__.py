"""Model hosting: one resident model, its state and swaps (:mod:`.host`), the lease a request
holds on it (:mod:`.lease`), admission control in front of it (:mod:`.admission`), and the
drain at shutdown (:mod:`.drain`)."""

from .admission import Admission
from .drain import Drain
from .host import NOT_REAL_MODE, ModelHost, ModelState
from .lease import CLIENT_CLOSED, Lease

__all__ = [
    "CLIENT_CLOSED",
    "NOT_REAL_MODE",
    "Admission",
    "Drain",
    "Lease",
    "ModelHost",
    "ModelState",
]
