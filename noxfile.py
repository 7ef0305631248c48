"""Developer sessions: ``nox -s tests lint typecheck`` (CI runs the same commands via .ci/run)."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test-suite (deterministic: virtual time, in-process fake exchange)."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, including its ASYNC (flake8-async) rules, and formatting."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package."""
    session.install("-e", ".[test]")
    session.run("mypy", "--strict", "trio_feed")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks (on demand, not in CI): prints figures and ratios."""
    session.install("-e", ".[test]")
    session.run("python", "bench/bench_feed.py", *session.posargs)
