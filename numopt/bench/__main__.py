"""``python -m numopt.bench <area> [args]``: run ``numopt.bench.<area>.main(args)``."""
import importlib
import sys


def _main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        print("usage: python -m numopt.bench <area> [--quick]")
        return 2
    mod = importlib.import_module(f"numopt.bench.{argv[0]}")
    return mod.main(argv[1:])


if __name__ == "__main__":
    sys.exit(_main())
