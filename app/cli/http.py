"""The one HTTP client of the CLI commands that talk to a running tunelab server (``tunelab
eval``, ``tunelab export``, ``tunelab deploy``): the REST API with an API token, and failures
said as sentences with an exit status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from app.core.i18n import N_, current_locale, gettext, lang_tag

DEFAULT_URL = "http://127.0.0.1:8000"
POLL_SECONDS = 2.0
TOKEN_HINT = N_(
    "create one with `tunelab token create --user EMAIL` and set TUNELAB_TOKEN (or pass --token)"
)


class CliError(Exception):
    """A failure said in words, with the exit status to leave with."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# --- The API client ---------------------------------------------------------------------------


class Api:
    """The tunelab REST API at ``url``, called as the owner of ``token``."""

    def __init__(self, url: str, token: str | None) -> None:
        if not token:
            raise CliError(gettext("no API token: %(hint)s", hint=gettext(TOKEN_HINT)))
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url + "/api/v1",
            # The server's error messages come back in the terminal's language.
            headers={
                "Authorization": f"Bearer {token}",
                "Accept-Language": lang_tag(current_locale()),
            },
            timeout=60,
        )

    def close(self) -> None:
        self.http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._json(self._call("GET", path, params=params))

    def post(self, path: str, body: Mapping[str, Any] | None = None) -> Any:
        return self._json(self._call("POST", path, body=body))

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            # Something answers at the URL, but not tunelab's API (a wrong port, a proxy page).
            message = gettext("%(url)s did not answer as a tunelab server would", url=self.url)
            raise CliError(message) from exc

    @contextmanager
    def stream(self, path: str, **params: Any) -> Iterator[httpx.Response]:
        """A streamed GET whose status has been checked; its bytes are still to be read."""
        with (
            self._transport(),
            self.http.stream("GET", path, params=present(params)) as response,
        ):
            if not response.is_success:
                response.read()
                _raise_for(response)
            yield response

    def _call(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, body: Any = None
    ) -> httpx.Response:
        with self._transport():
            response = self.http.request(method, path, params=present(params or {}), json=body)
        _raise_for(response)
        return response

    @contextmanager
    def _transport(self) -> Iterator[None]:
        """Network failures as a sentence naming the server, not a traceback."""
        try:
            yield
        except httpx.ConnectError as exc:
            message = gettext(
                "cannot reach tunelab at %(url)s: is `tunelab serve` running?", url=self.url
            )
            raise CliError(message) from exc
        except httpx.TimeoutException as exc:
            message = gettext("tunelab at %(url)s did not answer in time", url=self.url)
            raise CliError(message) from exc
        except httpx.HTTPError as exc:
            message = gettext(
                "could not talk to tunelab at %(url)s: %(error)s", url=self.url, error=exc
            )
            raise CliError(message) from exc


def present(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def _raise_for(response: httpx.Response) -> None:
    """Turn an error response into its ``detail`` and each ``field: message``."""
    if response.is_success:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    if current_locale() != "en" and isinstance(body, dict) and body.get("message"):
        detail = body["message"]  # the server's words in the terminal's language
    if not isinstance(detail, str):
        # Not a tunelab error body: perhaps another server, or a proxy in between.
        detail = gettext(
            "HTTP %(status)s from %(url)s", status=response.status_code, url=response.request.url
        )
    lines = [detail]
    for error in (body.get("errors") if isinstance(body, dict) else None) or []:
        if isinstance(error, dict) and error.get("field"):
            lines.append(f"  {error['field']}: {error.get('message', '')}")
    if response.status_code == 401:
        lines.append(f"  {gettext(TOKEN_HINT)}")
    # A refused request is the caller's to fix (2); a server failure is not (1).
    raise CliError("\n".join(lines), 2 if response.status_code < 500 else 1)


# --- Rendering --------------------------------------------------------------------------------


Command = Callable[[argparse.Namespace, Api], int]


def command_entry(command: Command) -> Callable[[argparse.Namespace], int]:
    """The argparse entry of ``command``: the client made from flags or environment, and
    errors printed as sentences with their exit status."""

    def run(args: argparse.Namespace) -> int:
        url = args.url or os.environ.get("TUNELAB_URL") or DEFAULT_URL
        token = args.token or os.environ.get("TUNELAB_TOKEN")
        try:
            api = Api(url, token)
            try:
                return command(args, api)
            finally:
                api.close()
        except CliError as error:
            print(gettext("error: %(message)s", message=error.message), file=sys.stderr)
            return error.status

    return run


def server_options() -> argparse.ArgumentParser:
    """The --url and --token flags every command that talks to a server takes."""
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument(
        "--url",
        help=gettext("tunelab server (default: $TUNELAB_URL or %(url)s)", url=DEFAULT_URL),
    )
    server.add_argument("--token", help=gettext("API token (default: $TUNELAB_TOKEN)"))
    return server
