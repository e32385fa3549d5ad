"""Which errors are the user's to fix: one convention for every command line of the plugin.

A user error carries a message naming the file or setting and the fix; the command prints it as one line and
exits 2. Anything else (KeyError, IndexError, TypeError, AttributeError...) is a bug in our code and keeps its
traceback.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """Base of the plugin's own errors whose message names the file or setting and the fix."""


# OSError numbers that say the machine's state, not the code, is at fault (a full disk, a read-only mount)
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})

# raised deliberately, with the file in the message, by our checks and by the standard library's file access
USER_ERROR_TYPES = (UserError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
                    IsADirectoryError, PermissionError)


def is_user_error(error: BaseException) -> bool:
    return isinstance(error, USER_ERROR_TYPES) or (type(error) is OSError and error.errno in ENVIRONMENT_ERRNOS)
