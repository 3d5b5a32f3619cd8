"""What every row of a batch is asked, and of which model: the part of a row's key that is not its image."""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from vlmkit.batch.inputs import Row
from vlmkit.batch.manifest import row_key
from vlmkit.chat import Chat
from vlmkit.errors import BadRequestError
from vlmkit.images import ImageHandle
from vlmkit.prediction import PredictionConfig
from vlmkit.wire.openai_chat import config_to_openai

DEFAULT_PROMPT = "Describe this image."


@dataclass(frozen=True)
class BatchJob:
    """What every row is asked, and of which model: the part of a row's key that is not its image."""

    model: str
    prompt: str = DEFAULT_PROMPT
    """A prompt, or a template over the row's fields (``"Caption {name}"``; ``{{`` for a brace)."""
    system: str | None = None
    config: PredictionConfig = field(default_factory=PredictionConfig)

    @property
    def local(self) -> bool:
        from vlmkit.client.backends.providers import is_provider_model

        return not is_provider_model(self.model)

    @property
    def model_name(self) -> str:
        """The model as the engine or the provider names it (``local/`` dropped)."""
        return self.model.removeprefix("local/")

    def prompt_for(self, row: Row) -> str:
        return render_prompt(self.prompt, row.fields)

    @cached_property
    def settings(self) -> dict[str, Any]:
        """The settings that change an answer, as they go into a key (made once: every row's key has them)."""
        fields = config_to_openai(self.config, extensions=True)
        if self.config.detail is not None:
            fields["detail"] = self.config.detail
        return {"system": self.system, **fields}

    def key(self, image: ImageHandle, prompt: str) -> str:
        return row_key(image.identifier, prompt, self.model, self.settings)

    def chat(self, image: ImageHandle, prompt: str) -> Chat:
        chat = Chat(self.system) if self.system else Chat()
        detail = self.config.detail if isinstance(self.config.detail, str) else None
        chat.add_user_message(prompt, images=[image], detail=detail)
        return chat


def render_prompt(template: str, fields: Mapping[str, Any]) -> str:
    """``template`` with ``{field}`` replaced by the row's field; a field the row lacks is a ``BadRequestError``."""
    names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    if not names:
        return template.replace("{{", "{").replace("}}", "}")
    missing = [n for n in names if n.split(".")[0].split("[")[0] not in fields]
    if missing:
        raise BadRequestError(
            f"the prompt template names {{{missing[0]}}}, which the row does not have; its fields: "
            f"{', '.join(map(str, fields)) or 'none'} (write {{{{ and }}}} for literal braces)"
        )
    try:
        return template.format_map(dict(fields))
    except (ValueError, IndexError, AttributeError, KeyError) as exc:
        raise BadRequestError(f"the prompt template {template!r} cannot be filled: {exc}") from None


def make_job(
    model: str,
    prompt: str = DEFAULT_PROMPT,
    system: str | None = None,
    config: PredictionConfig | Mapping[str, Any] | None = None,
    response_format: Any = None,
) -> BatchJob:
    if not isinstance(model, str) or not model:
        raise BadRequestError("a batch needs a model: a local key (local/KEY) or provider/name")
    cfg = config if isinstance(config, PredictionConfig) else PredictionConfig.from_dict(config or {})
    if response_format is not None:
        cfg = PredictionConfig(**{**cfg.__dict__, "response_format": response_format})
    return BatchJob(model, prompt, system, cfg)
