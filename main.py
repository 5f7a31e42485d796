"""BadNet Inspector: ``python main.py`` starts the app, ``python main.py <command>`` works headless."""

from cli import build_parser, main, run

__all__ = ["build_parser", "main", "run"]

if __name__ == "__main__":
    raise SystemExit(run())
