"""Errors that are the user's to fix, and how a command line shows them.

Every exception that a bad value, file or folder raises subclasses
`UserError`; the command-line entry points catch it (and `OSError` where they
write files), print `error: <one line>` and exit with status 1, without a
traceback. `one_line` is the one formatter of such messages, also used where a
library's multi-line error has to fit a log line.
"""

from collections.abc import Callable
import functools
import os
import sys
from typing import Any

from absl import flags


class UserError(Exception):
  """A mistake the user can fix; its message names the bad value in one line."""


class OutputError(UserError, ValueError):
  """An output that cannot be written where the command line says."""


def check_output_file(path, flag: str = '--out'):
  """Refuses, before any work, an output file that is a folder.

  Raises:
    OutputError: `path` is an existing folder.
  """
  if os.path.isdir(path):
    raise OutputError(f'{flag}={path} is a folder; give the file to write')


def check_output_dir(path, flag: str = '--out'):
  """Refuses, before any work, an output folder that is a file.

  Raises:
    OutputError: `path` exists and is not a folder.
  """
  if os.path.exists(path) and not os.path.isdir(path):
    raise OutputError(
        f'{flag}={path} is a file, not a folder; give a folder '
        '(it is created if missing)'
    )


def one_line(error: BaseException, *, with_type: bool = False) -> str:
  """`error`'s message in one line.

  Libraries put whole tracebacks or listings into messages: the first line
  says what failed and the last why, so those two are kept.

  Args:
    error: any exception.
    with_type: put the exception's class name first (for errors that are not
      ours, where the class is part of the explanation).

  Returns:
    The line, never empty: the class name when the message is.
  """
  if isinstance(error, OSError) and error.strerror:
    # str() of an OSError is '[Errno 21] Is a directory: PATH'.
    text = (
        f'{error.filename}: {error.strerror}'
        if error.filename
        else error.strerror
    )
  else:
    text = str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if not lines:
    return type(error).__name__
  message = (
      lines[0] if len(lines) == 1 else f'{lines[0].rstrip(":")}: {lines[-1]}'
  )
  return f'{type(error).__name__}: {message}' if with_type else message


def exit_with(error: BaseException):
  """Ends the process with status 1 and `error` in one line on stderr."""
  sys.exit(f'error: {one_line(error)}')


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing for `app.run(flags_parser=)`: a bad flag is one line.

  absl's own parser prints the error and a usage hint on two lines.
  """
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f'error: {one_line(e)} (see --helpfull)')


def command_line(
    main: Callable[[list[str]], Any], *also: type[BaseException]
) -> Callable[[list[str]], Any]:
  """`main` of an entry point, with `UserError` (and `also`) shown in one line.

  Args:
    main: the entry point's main(argv).
    *also: further exception classes that are the user's to fix there, e.g.
      OSError for a command that writes files.

  Returns:
    The wrapped main, for `app.run`.
  """
  caught = (UserError, *also)

  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except caught as e:
      exit_with(e)

  return wrapped
