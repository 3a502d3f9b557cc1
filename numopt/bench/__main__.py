"""``python -m numopt.bench <area> [options]``: run one area's ratio script."""
import importlib
import sys

AREAS = ["linalg", "dcdm", "ot", "bcd", "completion", "dask", "relu"]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in AREAS:
        print(f"usage: python -m numopt.bench {{{','.join(AREAS)}}} [--quick] [area options]")
        return 2
    return importlib.import_module(f"numopt.bench.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
