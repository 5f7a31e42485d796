"""The command line of BadNet Inspector: ``badnet-inspector <command>`` or ``python main.py <command>``.

Without a command it starts the window. Every default points at the bundled demo BadNet and its
data. Any bad input ends with exit code 2 and one line naming the file and the problem.
"""

from __future__ import annotations

import sys
import traceback

import engine  # noqa: F401  (quiet TensorFlow before anything imports it)
from engine.errors import InputError


def build_parser():
    from cli import commands
    from cli.parser import build_parser as build

    return build(commands)


def run() -> int:
    """The program (``main.py``, the ``badnet-inspector`` script): TensorFlow's chatter filtered, then :func:`main`."""
    from engine import tf_noise

    tf_noise.install()
    return main()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # a bug of ours: still one line unless asked
        text = " ".join(str(err).split())[:300]
        print(f"error: unexpected {type(err).__name__}: {text} (run with --debug for a traceback)", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return 1
