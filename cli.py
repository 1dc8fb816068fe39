"""The checkout's entry to gradcheck's command line: ``python cli.py ...``.

The command line itself lives in the installed package (``gradcheck.cli``; ``gradcheck``
and ``python -m gradcheck`` once installed). This file only points the built-in catalogue
at this checkout's ``derivations/``, wherever the command is run from.
"""

from pathlib import Path

from gradcheck.cli import main, use_catalogue

if __name__ == "__main__":
    use_catalogue(Path(__file__).resolve().parent)
    main()
