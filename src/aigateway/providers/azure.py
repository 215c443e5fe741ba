"""Azure OpenAI: the OpenAI wire format at deployment URLs, with an ``api-key`` header.

``api: deployments`` (default) sends ``{endpoint}/openai/deployments/{deployment}/
chat/completions?api-version=...``, the target's ``model`` being the deployment
name; ``api: v1`` sends ``{endpoint}/openai/v1/chat/completions`` with the model in
the body. Content-filter refusals arrive as 400 ``content_filter`` errors or as
``finish_reason: content_filter`` and are handled like any provider's (a route's
``content_filter_fallback``). Everything else is the OpenAI adapter's.
"""

from __future__ import annotations

from urllib.parse import quote

from aigateway.config.model import AzureProvider
from aigateway.providers.openai import OpenAIAdapter


class AzureAdapter(OpenAIAdapter):
    def __init__(self, config: AzureProvider, *, api_key: str | None) -> None:
        super().__init__(
            config.endpoint.rstrip("/") + "/openai",
            api_key=api_key,
            headers=config.headers,
            stream_usage=config.stream_usage,
        )
        self._api = config.api
        self._version = config.api_version

    def _url(self, operation: str, model: str) -> str:
        if self._api == "v1":
            return f"{self._base}/v1/{operation}"
        deployment = quote(model, safe="")
        return (
            f"{self._base}/deployments/{deployment}/{operation}"
            f"?api-version={quote(self._version, safe='')}"
        )

    def _request_headers(self, api_key: str | None) -> dict[str, str]:
        key = api_key or self._api_key
        return {**self._headers, "api-key": key} if key else self._headers
