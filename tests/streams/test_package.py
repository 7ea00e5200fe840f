"""The streams package: its re-exports load when first used, so a command (the worker above
all) imports only the modules it runs, and PyJWT only when a JWT key is configured."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import streams


@pytest.mark.parametrize("name", streams.__all__)
def test_every_export_is_its_modules_own(name: str) -> None:
    module = importlib.import_module(streams._EXPORTS[name])
    assert getattr(streams, name) is getattr(module, name)


def test_the_exports_are_listed_once_each() -> None:
    assert sorted(streams._EXPORTS) == sorted(streams.__all__)
    from streams import Replay, Source  # the way a user imports them

    assert (Replay.__module__, Source.__module__) == ("streams.replay", "streams.sources")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nope'"):
        _ = streams.Nope


def test_the_worker_loads_neither_replay_nor_pyjwt() -> None:
    code = (
        "import sys, streams.worker_cli, streams.worker_service, streams.http_auth\n"
        "auth = streams.http_auth.Auth(token='t')\n"
        "print(sorted(m for m in ('streams.replay', 'jwt') if m in sys.modules))\n"
        "streams.http_auth.Auth(jwt_key='a-key-long-enough-for-hs256-0123456789')\n"
        "print('jwt' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["[]", "True"]
