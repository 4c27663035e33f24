"""One exception type for every problem a user can fix (bad input, missing files, offline hub).

The CLI prints its message as one line and exits with code 2; the dashboard shows it in a box.
Anything else escaping the library is a bug.
"""


class TrojanScopeError(Exception):
    """A problem with the user's input or environment, with a message that says how to fix it."""
