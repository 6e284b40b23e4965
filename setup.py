"""The wheel compiles the translation catalogs: every app/translations/<locale>/LC_MESSAGES/
messages.po becomes the messages.mo next to it in the build, so a wheel (``pip install .``,
``pip wheel .``, the Docker images) carries compiled catalogs that are never committed.
Everything else about the package is in pyproject.toml."""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithCatalogs(build_py):
    def run(self) -> None:
        super().run()
        from babel.messages.mofile import write_mo
        from babel.messages.pofile import read_po

        source = Path(__file__).resolve().parent / "app" / "translations"
        for po in sorted(source.glob("*/LC_MESSAGES/messages.po")):
            locale = po.parent.parent.name
            target = Path(self.build_lib) / "app" / "translations" / po.relative_to(source)
            target = target.with_suffix(".mo")
            target.parent.mkdir(parents=True, exist_ok=True)
            with po.open("rb") as fp:
                catalog = read_po(fp, locale=locale, domain="messages")
            with target.open("wb") as out:
                write_mo(out, catalog)


setup(cmdclass={"build_py": BuildPyWithCatalogs})
