"""`python -m freshen.params --markdown`: the params reference (docs/params.md) on stdout."""

from __future__ import annotations

import argparse
import sys

from freshen.params.markdown import markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m freshen.params", description=__doc__)
    parser.add_argument("--markdown", action="store_true", required=True, help="print docs/params.md")
    parser.parse_args(argv)
    sys.stdout.write(markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
