"""Command line: upstream's flags (``-daemon -config FILE -debug N``), hook mode, subcommands.

Order matters for speed: slurmctld runs the hook for every job, so :func:`main` first rewrites
upstream's single-dash Go-style flags into GNU spellings, and when the command line is just
``[--config FILE] [--debug N]`` it runs :func:`ccsa.hook.main` at once -- before cyclopts, msgspec
or trio are imported -- and, as the console script, ends with :func:`ccsa.hook.exit_now` (no
interpreter teardown). Everything else goes to a cyclopts App built on demand. This module's
only top-level import is ``sys``: the installed ``cc-slurm-adapter`` (scripts/cc-slurm-adapter)
runs the hook with ``python -I -S``, where not even ``os`` is loaded; anything else started that
way turns site on first (:func:`main`).

Subcommands are one line each in :data:`SUBCOMMANDS` (``name, "module:function", help``) and are
imported only when invoked. Only command functions call ``trio.run``.
"""

import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: typing is too heavy for the hook path
if TYPE_CHECKING:
    from cyclopts import App

    from ccsa.config import Config

PROG = "cc-slurm-adapter"
DEFAULT_CONFIG_PATH = "/etc/cc-slurm-adapter/config.json"  # = ccsa.config.DEFAULT_CONFIG_PATH

# Words that select a subcommand (registered or to come); they are never hook mode.
SUBCOMMAND_WORDS = frozenset(
    {"check", "inspect", "demo", "backfill", "status", "version", "redrive", "files"}
)

# (name, "module:function", help). Add a line here to add a subcommand.
SUBCOMMANDS: list[tuple[str, str, str]] = [
    ("version", "ccsa.cli:version_command", "Print the ccsa version and exit."),
    ("demo", "ccsa.demo:demo_command", "Run simulated Slurm + stand-in cc-backend + the daemon."),
    ("inspect", "ccsa.inspect:inspect_command", "Show what ccsa would send for saved Slurm JSON."),
    ("check", "ccsa.check:check_command", "Check config, Slurm, cc-backend, NATS; print fixes."),
    ("status", "ccsa.status:status_command", "Ask the running daemon for its state."),
    ("redrive", "ccsa.redrive:redrive_command", "List or re-send parked rejections."),
    ("backfill", "ccsa.backfill:backfill_command", "Deliver a past window, chunk by chunk."),
    ("files", "ccsa.hostfiles:files_command", "List, print or install the systemd unit and hook."),
]

# Upstream (Go ``flag``) spellings accepted with one dash; ``-h`` is ``--help``.
_SINGLE_DASH = {
    "daemon": "daemon",
    "config": "config",
    "debug": "debug",
    "help": "help",
    "h": "help",
    "once": "once",
    "dry-run": "dry-run",
    "version": "version",
}
_VALUE_FLAGS = ("--config", "--debug")


def normalize(argv: list[str]) -> list[str]:
    """Rewrite ``-daemon``, ``-config FILE``, ``-config=FILE``, ``-debug N``, ``-help``, ``-h``
    to GNU spellings; other tokens (and everything after ``--``) stay as they are."""
    out: list[str] = []
    for index, token in enumerate(argv):
        if token == "--":
            out.extend(argv[index:])
            break
        if token.startswith("-") and not token.startswith("--") and len(token) > 1:
            name, eq, value = token[1:].partition("=")
            if name in _SINGLE_DASH:
                token = f"--{_SINGLE_DASH[name]}{eq}{value}"
        out.append(token)
    return out


def hook_arguments(argv: list[str]) -> str | bool | None:
    """For a normalised command line that means hook mode, the ``--config`` value (or None);
    ``False`` when it is anything else (daemon, help, subcommand, unknown flag)."""
    config: str | None = None
    index = 0
    while index < len(argv):
        token = argv[index]
        name, eq, value = token.partition("=")
        if name not in _VALUE_FLAGS:
            return False
        if not eq:
            if index + 1 >= len(argv):
                return False
            value = argv[index + 1]
            index += 1
        if name == "--config":
            config = value
        index += 1
    return config


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point of ``cc-slurm-adapter`` and ``ccsa``."""
    args = normalize(sys.argv[1:] if argv is None else list(argv))
    hook_config = hook_arguments(args)
    if hook_config is not False:
        from ccsa import hook

        status = hook.main(hook_config if isinstance(hook_config, str) else None, [])
        if argv is None:  # the console script, not a caller: skip the interpreter's teardown
            hook.exit_now(status)
        sys.exit(status)
    if sys.flags.no_site and "site" not in sys.modules:  # the launcher's -I -S, not a hook
        import site

        site.main()
    try:
        result = build_app()(args)
    except BrokenPipeError:
        # `status | head`: the reader left; say nothing more (and let the exit flush nothing).
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def fail(message: str, status: int) -> int:
    """Print one error line on stderr (with journald's ``<3>`` under systemd); return ``status``."""
    import os

    prefix = "<3>" if os.environ.get("JOURNAL_STREAM") else ""
    sys.stderr.write(f"{prefix}{PROG}: {' '.join(message.split())}\n")
    return status


def load_config(path: str | None, debug: int) -> "Config":
    """Set up logging at ``debug`` and load the config; a user mistake exits 2 with one line.

    For subcommands: ``cfg = cli.load_config(config, debug)``.
    """
    from ccsa import config, logs
    from ccsa.errors import ConfigError

    try:
        logs.setup(debug)
    except ValueError as exc:
        sys.exit(fail(str(exc), 2))
    try:
        return config.load(path or DEFAULT_CONFIG_PATH)
    except ConfigError as exc:
        sys.exit(fail(f"config error: {exc}", 2))


def run_daemon(config_path: str | None, debug: int, *, once: bool, dry_run: bool) -> int:
    """Load the config and hand over to the supervisor; returns the exit status."""
    cfg = load_config(config_path, debug)
    import importlib

    try:
        supervisor = importlib.import_module("ccsa.daemon.supervisor")
    except ImportError as exc:
        if exc.name and "ccsa" in exc.name:
            return fail(f"daemon mode is not available in this build: {exc}", 1)
        raise
    from ccsa.errors import CcsaError

    try:
        status: int = supervisor.run(cfg, once=once, dry_run=dry_run)
    except CcsaError as exc:
        return fail(str(exc), 1)
    except KeyboardInterrupt:
        return 130
    return status


def version_command() -> int:
    """Print the ccsa version and exit."""
    from ccsa import __version__

    print(f"ccsa {__version__} (drop-in for cc-slurm-adapter), Python {sys.version.split()[0]}")
    return 0


def build_app() -> "App":
    """The cyclopts App for everything but hook mode (imported only here)."""
    from cyclopts import App, Parameter

    from ccsa import __version__

    app = App(
        name=PROG,
        help=(
            "Feed ClusterCockpit's cc-backend with Slurm jobs in real time.\n\n"
            "Without --daemon (and without a subcommand) it runs in Prolog/Epilog mode: run by "
            "slurmctld as PrologSlurmctld/EpilogSlurmctld through hooks/hook.sh, it tells the "
            "daemon about the job."
        ),
        version=f"ccsa {__version__}",
        result_action="return_value",
        default_parameter=Parameter(negative=()),
    )

    @app.default
    def default(
        *,
        daemon: bool = False,
        config: str | None = None,
        debug: int = 2,
        once: bool = False,
        dry_run: bool = False,
    ) -> int:
        """Run the daemon (--daemon), or Prolog/Epilog mode without it.

        Parameters
        ----------
        daemon
            Run the daemon (the systemd service).
        config
            Config file (default /etc/cc-slurm-adapter/config.json).
        debug
            Log level 0-5 (2: warnings; 5: per-job trace).
        once
            Daemon: one sync, then exit (implies --daemon).
        dry_run
            Daemon: show what would be sent, send nothing (implies --daemon).
        """
        if daemon or once or dry_run:
            return run_daemon(config, debug, once=once, dry_run=dry_run)
        from ccsa import hook

        return hook.main(config, [])

    for name, target, text in SUBCOMMANDS:
        app.command(target, name=name, help=text)
    return app


if __name__ == "__main__":  # pragma: no cover
    main()
