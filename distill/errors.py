"""The one exception type for bad user input.

Launch scripts catch it and print its message without a traceback: the message itself must name the
file, field or value at fault and what was expected.
"""


class UserError(Exception):
    """Bad input from the user (path, config, argument): stop with a clear message, exit code 2.

    Most are found by every rank alike and printed by rank 0 only; one a single rank can meet (a damaged
    chunk of the cache that only it reads) sets `local`, so the rank that met it prints it."""

    local = False
