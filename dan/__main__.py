"""``python -m dan <command> [args]``: the commands of the ``dan`` console script (``python -m dan --help``)."""

from dan.cli.main import main

if __name__ == "__main__":
    main(prog="python -m dan")
