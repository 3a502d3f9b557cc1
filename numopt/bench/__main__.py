"""``python -m numopt.bench <area> [options]``: run ``numopt.bench.<area>.main``."""
import importlib
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0].startswith("-"):
        print("usage: python -m numopt.bench <area> [--quick] ...")
        return 2
    module = importlib.import_module(f"numopt.bench.{argv[0]}")
    return module.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
