"""The hub serves the dashboard build at / without shadowing its own routes, refuses paths
outside the build, and says how to build it when there is none."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from hitl_sip.config import load_config
from hitl_sip.hub.app import create_app
from hitl_sip.hub.registry import WorkerRegistry

Client = TestClient[aiohttp.web.Request, aiohttp.web.Application]


async def _client(directory: Path) -> Client:
    config = load_config(None, env={})
    config = dataclasses.replace(
        config, http=dataclasses.replace(config.http, dashboard_dir=str(directory)))
    return TestClient(TestServer(create_app(config, WorkerRegistry(), "t")))


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Client]:
    build = tmp_path / "browser"
    build.mkdir()
    (build / "index.html").write_text("<app-root></app-root>")
    (build / "main-ABC123.js").write_text("console.log(1)")
    (tmp_path / "secret.txt").write_text("not for agents")
    async with await _client(build) as c:
        yield c


async def test_root_serves_index_uncached_and_hashed_assets_cached(built: Client) -> None:
    r = await built.get("/")
    assert r.status == 200
    assert await r.text() == "<app-root></app-root>"
    assert r.headers["Cache-Control"] == "no-cache"
    r = await built.get("/main-ABC123.js")
    assert r.status == 200
    assert "immutable" in r.headers["Cache-Control"]
    assert r.headers["X-Content-Type-Options"] == "nosniff"


async def test_the_hubs_own_routes_keep_precedence(built: Client) -> None:
    r = await built.get("/healthz")
    assert r.status == 503
    assert (await r.json())["status"] == "starting"


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/missing.js",
                                  "/..%2Fsecret.txt"])
async def test_paths_outside_the_build_or_missing_are_404(built: Client, path: str) -> None:
    r = await built.get(path)
    assert r.status == 404
    assert "not for agents" not in await r.text()


async def test_without_a_build_root_says_how_to_build_it(tmp_path: Path) -> None:
    async with await _client(tmp_path / "nothing") as c:
        r = await c.get("/")
        assert r.status == 503
        assert "make run" in await r.text()
