"""Azure OpenAI deployments and the presets for OpenAI-compatible services."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aigateway.config.load import parse_config
from aigateway.config.model import PRESETS, AzureProvider, OpenAIProvider
from aigateway.errors import ConfigError
from aigateway.providers.azure import AzureAdapter
from tests.conftest import OTHER_KEY, GatewayFactory
from tests.fakes import chunk_events, completion

AZURE_KEY = "azure-SECRET-0123456789abcdef"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_fill_in_base_url_and_stream_usage(preset: str) -> None:
    provider = OpenAIProvider.model_validate({"type": "openai", "preset": preset})
    assert (provider.base_url, provider.stream_usage) == PRESETS[preset]


def test_explicit_settings_win_over_a_preset() -> None:
    provider = OpenAIProvider.model_validate(
        {
            "type": "openai",
            "preset": "mistral",
            "base_url": "http://127.0.0.1:9/v1",
            "stream_usage": True,
        }
    )
    assert (provider.base_url, provider.stream_usage) == ("http://127.0.0.1:9/v1", True)


def test_an_unknown_preset_names_its_path() -> None:
    text = """
version: 1
providers: {x: {type: openai, preset: deepsake}}
models: {m: {targets: [{provider: x, model: m}]}}
"""
    with pytest.raises(ConfigError) as caught:
        parse_config(text.encode(), env={}, base_dir=Path("."))
    assert any(
        "providers.x.openai.preset" in p or "providers.x.preset" in p for p in caught.value.problems
    )


@pytest.mark.parametrize(
    ("api", "url"),
    [
        (
            "deployments",
            "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions"
            "?api-version=2024-10-21",
        ),
        ("v1", "https://res.openai.azure.com/openai/v1/chat/completions"),
    ],
)
def test_azure_urls_and_key_header(api: str, url: str) -> None:
    config = AzureProvider.model_validate(
        {"type": "azure", "endpoint": "https://res.openai.azure.com/", "api": api}
    )
    req = AzureAdapter(config, api_key=AZURE_KEY).chat_request(
        {"messages": []}, "prod-4o", stream=True, api_key=None
    )
    assert req.url == url
    assert req.headers["api-key"] == AZURE_KEY and "authorization" not in req.headers
    assert json.loads(req.body)["stream_options"] == {"include_usage": True}


async def test_openai_sdk_through_an_azure_deployment(make_gateway: GatewayFactory) -> None:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(request)
        body = await request.json()
        if request.match_info["operation"] == "embeddings":
            return web.json_response(
                {
                    "object": "list",
                    "model": "text-embedding-3-small",
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                }
            )
        if not body.get("stream"):
            if "[filter]" in json.dumps(body):
                return web.json_response(
                    {
                        "error": {
                            "code": "content_filter",
                            "message": "The response was filtered",
                            "type": None,
                            "param": "prompt",
                        }
                    },
                    status=400,
                )
            return web.json_response(completion(model="gpt-4o-2024-11-20"))
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for event in chunk_events(model="gpt-4o-2024-11-20"):
            data = event if isinstance(event, bytes) else json.dumps(event).encode()
            await resp.write(b"data: " + data + b"\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/openai/deployments/{deployment}/{operation:.*}", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    endpoint = str(server.make_url("")).rstrip("/")

    def edit(text: str) -> str:
        provider = f'  az: {{type: azure, endpoint: "{endpoint}", api_key: "{AZURE_KEY}"}}\n'
        routes = (
            "  azure-4o: {targets: [{provider: az, model: prod-4o}]}\n"
            "  azure-embed: {targets: [{provider: az, model: embed-small}]}\n"
        )
        text = text.replace("providers:\n", "providers:\n" + provider, 1)
        return text.replace("models:\n", "models:\n" + routes, 1)

    gw = await make_gateway(edit=edit)
    try:
        async with openai.AsyncOpenAI(base_url=gw.url, api_key=OTHER_KEY, max_retries=0) as c:
            raw = await c.chat.completions.with_raw_response.create(
                model="azure-4o", messages=[{"role": "user", "content": "hi"}]
            )
            stream = await c.chat.completions.create(
                model="azure-4o", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
            vectors = await c.embeddings.create(
                model="azure-embed", input="hi", encoding_format="float"
            )
            with pytest.raises(openai.BadRequestError) as filtered:
                await c.chat.completions.create(
                    model="azure-4o", messages=[{"role": "user", "content": "[filter]"}]
                )
        assert raw.headers["x-aigateway-model"] == "gpt-4o-2024-11-20"
        assert text == "Hello!"
        assert vectors.data[0].embedding == [0.1, 0.2]
        assert filtered.value.body["code"] == "content_filter"  # type: ignore[index]
        first = seen[0]
        assert first.path == "/openai/deployments/prod-4o/chat/completions"
        assert first.query["api-version"] == "2024-10-21"
        assert first.headers["api-key"] == AZURE_KEY
        assert seen[2].path == "/openai/deployments/embed-small/embeddings"
        assert AZURE_KEY not in gw.log.getvalue()
    finally:
        await server.close()


def test_azure_answers_are_priced_by_their_host() -> None:
    from decimal import Decimal

    from aigateway.pricing import PriceBook
    from aigateway.usage import Usage

    config = AzureProvider.model_validate(
        {"type": "azure", "endpoint": "https://r.openai.azure.com"}
    )
    book = PriceBook({}, clock=lambda: 0.0, on_unpriced=lambda p, m: None)
    cost = book.cost("az", config.base_url, "gpt-4o-2024-08-06", Usage(1000, 500))
    assert cost == Decimal("0.0075")


def test_the_output_cap_goes_in_the_field_the_provider_wants() -> None:
    from aigateway.providers.openai import OpenAIAdapter

    assert (
        OpenAIProvider.model_validate({"type": "openai", "preset": "openai"}).max_tokens_field
        == "max_completion_tokens"
    )
    assert OpenAIProvider.model_validate({"type": "openai"}).max_tokens_field == "max_tokens"
    modern = OpenAIAdapter("https://x/v1", api_key=None, max_tokens_field="max_completion_tokens")
    sent = json.loads(
        modern.chat_request({"max_tokens": 50}, "o3", stream=False, api_key=None).body
    )
    assert sent == {"model": "o3", "max_completion_tokens": 50}
    both = {"max_tokens": 50, "max_completion_tokens": 70}  # the caller's own choice stays
    sent = json.loads(modern.chat_request(both, "o3", stream=False, api_key=None).body)
    assert (sent["max_tokens"], sent["max_completion_tokens"]) == (50, 70)
    legacy = OpenAIAdapter("https://x/v1", api_key=None)
    sent = json.loads(legacy.chat_request({"max_tokens": 50}, "m", stream=False, api_key=None).body)
    assert sent["max_tokens"] == 50
