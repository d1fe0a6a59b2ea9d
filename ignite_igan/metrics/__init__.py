"""Sample-quality and classification metrics: Inception Score, FID, semi-supervised error, mode coverage.

Modules (an acyclic import graph, checked by ``tests/test_protocol.py``): :mod:`~ignite_igan.metrics.modes`
(``evaluation_mode``) and :mod:`~ignite_igan.metrics.protocol` (the protocol card, ``tf32_mode``) import nothing of
the package; :mod:`~ignite_igan.metrics.extractors` imports those two; :mod:`~ignite_igan.metrics.inception` and
:mod:`~ignite_igan.metrics.fid` import the extractors; :mod:`~ignite_igan.metrics.sampling` imports the Inception
Score for its default.
"""
from ignite_igan.metrics import extractors, fid, inception, modes, protocol, sampling, ssl_error
from ignite_igan.metrics import mode_coverage as _coverage  # the module; the function of that name is imported below
from ignite_igan.metrics.extractors import *  # noqa: F401,F403
from ignite_igan.metrics.fid import *  # noqa: F401,F403
from ignite_igan.metrics.inception import *  # noqa: F401,F403
from ignite_igan.metrics.mode_coverage import *  # noqa: F401,F403
from ignite_igan.metrics.modes import *  # noqa: F401,F403
from ignite_igan.metrics.protocol import *  # noqa: F401,F403
from ignite_igan.metrics.sampling import *  # noqa: F401,F403
from ignite_igan.metrics.ssl_error import *  # noqa: F401,F403

# The package's names are its modules' public names, each listed once, in its module.
__all__ = (
    extractors.__all__ + fid.__all__ + inception.__all__ + _coverage.__all__ + modes.__all__ + protocol.__all__
    + sampling.__all__ + ssl_error.__all__
)
