"""The Responses API's store: bounded in memory by count and by image bytes, the oldest forgotten
first, and read back from disk (images as data URLs) when the server has a data directory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import photo_path
from vlmkit.chat import Chat, ImagePart, ImageRef
from vlmkit.images import prepare_image
from vlmkit.server.responses_store import ResponseStore

HOPPER = photo_path("grace_hopper.jpg")


def chat_with_image() -> Chat:
    chat = Chat()
    chat.add_user_message("What is this?", images=[prepare_image(HOPPER)])
    chat.add_assistant_response("A woman.")
    return chat


def rid(n: int) -> str:
    return "resp_" + f"{n:048x}"


def test_the_oldest_goes_first_by_count_and_by_bytes() -> None:
    size = HOPPER.stat().st_size
    store = ResponseStore(None, max_kept=3, max_bytes=2 * size)

    async def run() -> list[bool]:
        for n in range(3):
            await store.put(rid(n), chat_with_image())
        return [await store.get(rid(n)) is not None for n in range(3)]

    assert asyncio.run(run()) == [False, True, True]  # a third image would pass the byte bound
    texts = ResponseStore(None, max_kept=2)

    async def by_count() -> list[bool]:
        for n in range(3):
            chat = Chat()
            chat.add_user_message(f"turn {n}")
            await texts.put(rid(n), chat)
        return [await texts.get(rid(n)) is not None for n in range(3)]

    assert asyncio.run(by_count()) == [False, True, True]


def test_a_conversation_on_disk_is_read_back_with_its_image(tmp_path: Path) -> None:
    chat = chat_with_image()

    async def run() -> Chat | None:
        await ResponseStore(tmp_path).put(rid(7), chat)
        return await ResponseStore(tmp_path).get(rid(7))  # a new store: as after a restart

    back = asyncio.run(run())
    assert back is not None and [m.role for m in back.messages] == ["user", "assistant"]
    [ref] = [p for p in back.messages[0].content if isinstance(p, (ImageRef, ImagePart))]
    assert isinstance(ref, ImageRef) and ref.url.startswith("data:image/jpeg;base64,")
    assert back.messages[1].text == "A woman."
    assert asyncio.run(ResponseStore(tmp_path).get("resp_../../etc/passwd")) is None  # never a path out of the store
