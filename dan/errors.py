"""Errors a user can cause.

Everything a user can get wrong (a bad flag, missing data, an infeasible budget, a malformed
``arch.json``, a corrupt checkpoint) raises :class:`UserError`. The command-line tools turn it into
one line on stderr and exit status 2; library callers get an ordinary exception with the same text.
Internal bugs raise whatever they raise, with a traceback.
"""


class UserError(Exception):
    """A mistake the user can fix; the message says what was wrong and how to fix it."""


class UnsupportedModelError(UserError):
    """The model holds a module or an operation that the adjoint conversion cannot handle."""


class DivergedError(UserError, FloatingPointError):
    """Training diverged (a non-finite loss or weights); the last finite checkpoint is kept."""
