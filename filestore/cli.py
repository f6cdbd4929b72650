"""The ``filestore`` command line: a thin shell over the library's functions.

``main(argv)`` returns the exit code, so tests call it in-process. Codes
follow fsck(8): 0 clean or done, 1 errors corrected, 4 errors left
uncorrected, 8 operational error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import click

from filestore.demo import run_demo
from filestore.errors import FilestoreError

EXIT_OK: Final = 0
EXIT_CORRECTED: Final = 1
EXIT_UNCORRECTED: Final = 4
EXIT_OPERATIONAL: Final = 8

DEFAULT_DEMO_DIR: Final = "filestore-demo"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """filestore: check, compact, inspect and move session stores."""


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=DEFAULT_DEMO_DIR)
def demo(directory: Path) -> None:
    """Play a flow runner pausing and resuming sessions across a restart.

    DIRECTORY defaults to ./filestore-demo; running the demo again resumes
    the sessions a previous run left paused.
    """
    run_demo(directory, say=click.echo)


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    try:
        result = cli.main(args=argv, prog_name="filestore", standalone_mode=False)
    except click.exceptions.Exit as done:
        return int(done.exit_code)
    except click.ClickException as error:
        error.show()
        return EXIT_OPERATIONAL
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return EXIT_OPERATIONAL
    except FilestoreError as error:
        click.echo(f"filestore: {error}", err=True)
        return EXIT_OPERATIONAL
    except OSError as error:
        click.echo(f"filestore: {error}", err=True)
        return EXIT_OPERATIONAL
    return int(result) if isinstance(result, int) else EXIT_OK


def main_entry() -> None:
    """The ``filestore`` console script."""
    raise SystemExit(main())
