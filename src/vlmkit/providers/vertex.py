"""Vertex AI's Gemini models: Gemini's request format at Vertex AI's address, with OAuth bearer auth.

Wire format: ``POST https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/
{location}/publishers/google/models/{model}:generateContent`` (``aiplatform.googleapis.com`` for the
``global`` location) with ``Authorization: Bearer {access token}``. ``gs://`` images reach the model
as ``{"file_data": {"mime_type", "file_uri"}}`` with the MIME type the caller declared (there are no
bytes to sniff); everything else is inline data, as for Gemini.
"""

from __future__ import annotations

from urllib.parse import quote

from vlmkit.providers import gemini
from vlmkit.providers.base import ProviderConfig, WireRequest
from vlmkit.providers.request import CompletionRequest

STREAM_FORMAT = "sse"
parse_response = gemini.parse_response
stream_parser = gemini.stream_parser


def default_api_base(location: str) -> str:
    host = "aiplatform.googleapis.com" if location == "global" else f"{location}-aiplatform.googleapis.com"
    return f"https://{host}"


def build_request(req: CompletionRequest, cfg: ProviderConfig) -> WireRequest:
    project = quote(str(cfg.options["project"]), safe="")
    location = quote(str(cfg.options["location"]), safe="")
    version = cfg.options.get("api_version", "v1")
    model = gemini.model_path(req.model)
    url = (
        f"{cfg.api_base.rstrip('/')}/{version}/projects/{project}/locations/{location}"
        f"/publishers/google/models/{model}:{gemini.method(req)}"
    )
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if cfg.api_key:
        headers["Authorization"] = f"Bearer {cfg.api_key}"
    headers.update(cfg.headers)
    return WireRequest(url, headers, gemini.build_body(req, cfg, gcs=True))
