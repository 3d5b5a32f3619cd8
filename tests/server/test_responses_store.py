"""The Responses API's store: bounded in memory by count and by image bytes (an image shown by several
conversations held and counted once), the oldest forgotten first, and read back from disk (images
as data URLs) when the server has a data directory, where each image is written once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.conftest import photo_path
from vlmkit.chat import Chat, ImagePart, ImageRef
from vlmkit.images import prepare_image
from vlmkit.server.responses_store import ResponseStore
from vlmkit.wire.openai_chat import messages_from_chat

HOPPER = photo_path("grace_hopper.jpg")


def chat_with_image(path: Path = HOPPER) -> Chat:
    chat = Chat()
    chat.add_user_message("What is this?", images=[prepare_image(path)])  # a new handle, new bytes, each time
    chat.add_assistant_response("A woman.")
    return chat


def kept_images(chat: Chat) -> list[bytes]:
    return [p.image.data for m in chat.messages for p in m.content if isinstance(p, ImagePart)]


def rid(n: int) -> str:
    return "resp_" + f"{n:048x}"


def test_the_oldest_goes_first_by_count_and_by_bytes() -> None:
    photos = [HOPPER, photo_path("rocket.jpg"), photo_path("retina.jpg")]
    store = ResponseStore(None, max_kept=3, max_bytes=photos[1].stat().st_size + photos[2].stat().st_size)

    async def run() -> list[bool]:
        for n, photo in enumerate(photos):
            await store.put(rid(n), chat_with_image(photo))
        return [await store.get(rid(n)) is not None for n in range(3)]

    assert asyncio.run(run()) == [False, True, True]  # the third image would pass the byte bound
    assert store.image_bytes == photos[1].stat().st_size + photos[2].stat().st_size
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


def test_an_image_shown_by_several_conversations_is_held_once() -> None:
    size = HOPPER.stat().st_size
    store = ResponseStore(None, max_kept=3, max_bytes=2 * size)

    async def run() -> list[Chat | None]:
        for n in range(3):  # as a client resending its conversation sends the same image again
            await store.put(rid(n), chat_with_image())
        return [await store.get(rid(n)) for n in range(3)]

    kept = asyncio.run(run())
    assert all(chat is not None for chat in kept)  # three images under a bound of two: they are one
    assert store.image_bytes == size
    [first], [second], [third] = (kept_images(chat) for chat in kept if chat is not None)
    assert first is second is third and first == HOPPER.read_bytes()

    async def forget() -> None:
        for n in range(3, 6):  # three text-only turns push the three conversations out
            chat = Chat()
            chat.add_user_message(f"turn {n}")
            await store.put(rid(n), chat)

    asyncio.run(forget())
    assert store.image_bytes == 0 and asyncio.run(store.get(rid(2))) is None


def test_each_image_is_written_to_disk_once(tmp_path: Path) -> None:
    first = chat_with_image()
    follow = Chat()
    follow.messages.extend(first.messages)  # a follow-up shows the first turn's image again
    follow.add_user_message("And now?", images=[prepare_image(photo_path("rocket.jpg"))])
    follow.add_assistant_response("A rocket.")

    async def run() -> Chat | None:
        store = ResponseStore(tmp_path)
        await store.put(rid(1), first)
        await store.put(rid(2), follow)
        await store.put(rid(3), chat_with_image())  # another conversation, the same image
        return await ResponseStore(tmp_path).get(rid(2))

    back = asyncio.run(run())
    images = sorted((tmp_path / "responses" / "images").iterdir())
    assert sorted(p.read_bytes() for p in images) == sorted(
        [HOPPER.read_bytes(), photo_path("rocket.jpg").read_bytes()]
    )
    written = (tmp_path / "responses" / f"{rid(2)}.json").read_text()
    assert len(written) < 2000 and "base64" not in written  # the messages name the images, not their bytes
    assert back is not None and [m.role for m in back.messages] == ["user", "assistant", "user", "assistant"]
    refs = [p for m in back.messages for p in m.content if isinstance(p, ImageRef)]
    assert [r.url[:23] for r in refs] == ["data:image/jpeg;base64,"] * 2


def test_a_stored_image_name_never_leads_out_of_the_store(tmp_path: Path) -> None:
    asyncio.run(ResponseStore(tmp_path).put(rid(4), chat_with_image()))
    path = tmp_path / "responses" / f"{rid(4)}.json"
    data = json.loads(path.read_text())
    data["messages"][0]["content"][1]["image_url"]["file_id"] = "../../../etc/passwd"
    path.write_text(json.dumps(data))
    assert asyncio.run(ResponseStore(tmp_path).get(rid(4))) is None  # as a conversation that is not there


def test_a_conversation_stored_with_its_images_inline_is_still_read(tmp_path: Path) -> None:
    # as the store wrote them before images had files of their own: data URLs in the messages
    (tmp_path / "responses").mkdir()
    inline = {"messages": messages_from_chat(chat_with_image())}
    (tmp_path / "responses" / f"{rid(5)}.json").write_text(json.dumps(inline))
    back = asyncio.run(ResponseStore(tmp_path).get(rid(5)))
    assert back is not None
    [ref] = [p for p in back.messages[0].content if isinstance(p, ImageRef)]
    assert ref.url.startswith("data:image/jpeg;base64,") and back.messages[1].text == "A woman."
