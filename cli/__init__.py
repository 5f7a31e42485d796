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
    """Parse and run one command. Usage errors end with one line and exit 2 (argparse's, through
    :class:`cli.parser.Parser`); so does bad input; a bug of ours is one line and exit 1."""
    from cli import console

    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors: argparse said what it had to
        return int(stop.code or 0) if isinstance(stop.code, int) else 2
    except Exception as err:  # the parser itself failed: still one line
        text = " ".join(str(err).split())[:300]
        print(f"error: unexpected {type(err).__name__} building the options: {text}", file=sys.stderr)
        if debug:
            traceback.print_exc()
        return 1
    console.set_quiet(getattr(args, "quiet", False))
    try:
        return args.func(args)
    except InputError as err:
        from cli.options import FLAGS

        print(f"error: {err.said_as(FLAGS)}", file=sys.stderr)
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
    finally:
        console.set_quiet(False)
