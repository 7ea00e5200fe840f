"""``trackerflow reminders``: a conversation's pending reminders, asked of a running worker."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import click

TIMEOUT_S = 30.0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("conversation_id")
@click.option(
    "--url",
    default="http://127.0.0.1:6066",
    show_default=True,
    envvar="TRACKERFLOW_URL",
    show_envvar=True,
    help="Any worker's HTTP API (it forwards to the conversation's owner).",
)
@click.option(
    "--token",
    envvar="TRACKERFLOW_AUTH_TOKEN",
    show_envvar=True,
    help="The API's auth token, if it has one.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the API's JSON answer instead of a table."
)
def reminders(conversation_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Show the pending reminders of CONVERSATION_ID, soonest first.

    Asks GET /conversations/CONVERSATION_ID/reminders of a running worker. Exit status 0, 1 if
    the conversation is unknown or the worker answers with an error, 2 for bad usage.

    \b
    Example:
      trackerflow reminders conv-1 --url http://127.0.0.1:6066
    """
    path = f"/conversations/{urllib.parse.quote(conversation_id, safe='')}/reminders"
    query = f"?{urllib.parse.urlencode({'token': token})}" if token else ""
    answer = _get(url.rstrip("/") + path + query)
    if as_json:
        click.echo(json.dumps(answer))
        return
    pending = answer["reminders"]
    if not pending:
        click.echo(f"{conversation_id}: no pending reminders")
        return
    click.echo(f"{conversation_id}: {len(pending)} pending reminder(s)")
    for reminder in pending:
        click.echo(_line(reminder))


def _get(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            found: dict[str, Any] = json.loads(response.read())
            return found
    except urllib.error.HTTPError as error:
        try:
            message = json.loads(error.read()).get("message", "")
        except ValueError:
            message = ""
        raise click.ClickException(f"the worker answered {error.code}: {message}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise click.ClickException(f"cannot reach a worker at {url}: {reason}") from None


def _line(reminder: dict[str, Any]) -> str:
    due = datetime.fromtimestamp(reminder["due"], UTC).isoformat(timespec="seconds")
    what = (
        f"intent {reminder['intent']}" if reminder.get("intent") else f"action {reminder['action']}"
    )
    entities = f" entities {json.dumps(reminder['entities'])}" if reminder.get("entities") else ""
    kill = "" if reminder.get("kill_on_user_message") else " (survives user messages)"
    return f"  {due}  {reminder['name']}: {what}{entities}{kill}"
