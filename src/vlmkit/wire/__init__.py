"""Other people's protocols, translated both ways into vlmkit's values, with no I/O.

Each module here reads one protocol's requests and answers (dicts, as JSON parses them) into vlmkit
values (:class:`~vlmkit.chat.Chat`, :class:`~vlmkit.prediction.PredictionConfig`,
:class:`~vlmkit.prediction.PredictionResult`) and writes them back. Nothing here touches the
network, the disk or an image's bytes: an image named in a request stays a reference
(:class:`~vlmkit.chat.ImageRef`) until :mod:`vlmkit.images.resolve` reads it.

- :mod:`vlmkit.wire.openai_chat`: OpenAI's Chat Completions (messages, settings, finish reasons,
  ``chat.completion`` and ``chat.completion.chunk`` bodies with vlmkit's ``stats`` / ``model_info``).

Room is left beside it for the other protocols vlmkit speaks or will speak, one module each:
``openai_responses`` (OpenAI's Responses API), ``anthropic_messages``, ``ollama`` and ``lmstudio``.
Every face (the SDK, ``completion()``, ``vlmkit serve``, the remote client) translates through
these modules, so a protocol's rules are written once.
"""
