"""The one exception type that reaches the user as a single line.

Anything a user can get wrong (an unknown task, a bad flag value, a corrupt
checkpoint, a typo in a sweep spec) raises :class:`UserError`. The CLI turns it
into one line on stderr and exit status 2; every other exception is a bug and
keeps its traceback.

Example:
    >>> from lab.errors import UserError
    >>> try:
    ...     raise UserError("unknown size '2M'; choose one of 1M, 3M, 10M")
    ... except UserError as e:
    ...     print(e)
    unknown size '2M'; choose one of 1M, 3M, 10M
"""


class UserError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""
