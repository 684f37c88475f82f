"""The ``goalworker`` command line: worker, migrate, demo, verify, api, token."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from goalworker.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(package_name="goalworker")
def main() -> None:
    """Detect workflow goals in contact-event streams and exit achieving enrollments."""


@main.command()
def worker() -> None:
    """Run the stream worker until SIGTERM or Ctrl-C (settings from GOALWORKER_* variables)."""
    import faust

    from goalworker.app import create_app

    settings = Settings()
    if settings.event_loop == "uvloop":
        import mode.loop

        # Before faust creates the loop: every await of the consume path runs on it.
        mode.loop.use("uvloop")
    app, _ = create_app(settings)
    log.info(
        "starting worker loop=%s group=%s bootstrap=%s inputs=%s",
        settings.event_loop,
        settings.group_id,
        settings.kafka_bootstrap,
        ",".join(settings.input_topics),
    )
    faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()


@main.command()
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
def migrate(revision: str) -> None:
    """Create or upgrade the PostgreSQL schema."""
    _logging(Settings().log_level)
    upgrade(revision)


def upgrade(revision: str = "head") -> None:
    """Apply the alembic migrations up to ``revision``."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", Settings().database_url.replace("%", "%%"))
    command.upgrade(config, revision)


@main.command()
@click.option("--contacts", default=5000, show_default=True, help="Contacts in the stream.")
@click.option("--seed", default=7, show_default=True, help="Random seed of the generated stream.")
@click.option("--timeout", default=300.0, show_default=True, help="Seconds to wait for the worker.")
def demo(contacts: int, seed: int, timeout: float) -> None:
    """Run the worker on a generated stream and print a summary to check."""
    from goalworker import demo as demo_module

    _logging("WARNING")
    sys.exit(demo_module.run(Settings(), contacts=contacts, seed=seed, timeout=timeout))


@main.command()
@click.option("--account-prefix", default=None, help="Check only accounts whose id starts so.")
@click.option(
    "--expected",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="JSON list of the enrollment ids that should have achieved (lost/extra check).",
)
def verify(account_prefix: str | None, expected: Path | None) -> None:
    """Check achievements in PostgreSQL against exit commands on Kafka; exit 1 on a breach."""
    import asyncio
    import json

    from goalworker.verify import verify as run_verify

    wanted = set(json.loads(expected.read_text())) if expected else None
    report = asyncio.run(
        run_verify(Settings(), account_prefix=account_prefix, expected_enrollments=wanted)
    )
    for line in report.lines():
        click.echo(line)
    sys.exit(0 if report.ok else 1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535))
def api(host: str, port: int) -> None:
    """Serve the goals HTTP API (docs at /docs) until SIGTERM or Ctrl-C."""
    import uvicorn

    from goalworker.api import create_app
    from goalworker.errors import AuthNotConfigured

    settings = Settings()
    _logging(settings.log_level)
    try:
        app = create_app(settings)
    except AuthNotConfigured as exc:
        raise click.ClickException(str(exc)) from exc
    # log_config=None: uvicorn's own lines go through the logging set up above.
    uvicorn.run(app, host=host, port=port, log_config=None, log_level=settings.log_level.lower())


@main.command()
@click.option("--account", required=True, help="Account id the token is scoped to.")
@click.option("--user", required=True, help="User id, recorded as created_by / updated_by.")
@click.option(
    "--ttl-seconds", default=3600, show_default=True, type=click.IntRange(1, 366 * 24 * 3600)
)
@click.option(
    "--private-key",
    default=None,
    help="RS256 only: the signing private key, PEM text or file path.",
)
def token(account: str, user: str, ttl_seconds: int, private_key: str | None) -> None:
    """Print a bearer token for the API, signed with the configured key (for local use)."""
    from goalworker.auth import mint_token
    from goalworker.errors import AuthNotConfigured

    try:
        click.echo(mint_token(Settings(), account, user, ttl_seconds, private_key))
    except AuthNotConfigured as exc:
        raise click.ClickException(str(exc)) from exc


@main.command("demo-producer", hidden=True)
@click.option("--run-id", required=True)
@click.option("--contacts", default=5000)
@click.option("--seed", default=7)
@click.option("--expected", type=click.Path(path_type=Path), required=True)
def demo_producer(run_id: str, contacts: int, seed: int, expected: Path) -> None:
    """Produce the demo stream (the demo starts this as its own process)."""
    from goalworker import demo as demo_module

    _logging("INFO")
    demo_module.produce(
        Settings(), run_id=run_id, contacts=contacts, seed=seed, expected_path=expected
    )


if __name__ == "__main__":
    main()
