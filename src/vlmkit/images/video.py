"""Videos and animations as a source: ``prepare_video`` samples frames, each with its time.

A model that reads images gets a video as frames: ``frames=N`` spread evenly over it, or one
``every=S`` seconds, each frame an :class:`~vlmkit.images.ImageHandle` sized for ``target`` and
preceded in a chat by its timestamp (``"Frame at 0:01.5:"``), so the model can say when something
happens. Video files are decoded with PyAV (``av``, FFmpeg; the ``media`` extra); animated GIF, WebP
and PNG with Pillow, their frame times from the frames' own durations.

Limits are checked before any frame is decoded, and an error names the limit and how to get under
it: ``max_frames`` (default 32), ``max_bytes`` of the file, and ``max_tokens``, the image tokens
all frames may cost at ``target`` (estimated as :func:`vlmkit.images.estimate_image_tokens` does);
with ``max_tokens`` and neither ``frames`` nor ``every``, as many frames as the budget allows.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import pybase64
from PIL import Image, ImageSequence

from vlmkit.errors import InvalidVideoError, VideoError, VideoTooLargeError
from vlmkit.images.handle import ImageHandle, content_identifier, image_from_bytes
from vlmkit.images.policy import ImagePolicy
from vlmkit.images.sniff import ImageFormat, sniff_format
from vlmkit.images.source import ImageSource, read_source
from vlmkit.images.tokens import ESTIMATORS

DEFAULT_MAX_FRAMES = 32
DEFAULT_FRAMES = 8
"""Frames taken when neither ``frames``, ``every`` nor ``max_tokens`` says how many."""
DEFAULT_MAX_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class VideoFrame:
    """One sampled frame: its time from the start of the video, in seconds, and its image."""

    time: float
    image: ImageHandle


@dataclass(frozen=True, eq=False)
class Video:
    """A video (or an animation) and the frames sampled from it."""

    data: bytes = field(repr=False)
    name: str
    mime_type: str
    duration: float
    """Seconds."""
    width: int
    height: int
    frames: tuple[VideoFrame, ...]

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @cached_property
    def base64(self) -> str:
        """The file as base64 (computed once), for providers that read videos themselves."""
        return pybase64.b64encode_as_string(self.data)

    @property
    def frame_images(self) -> list[ImageHandle]:
        return [f.image for f in self.frames]

    def interleaved(self) -> list[str | ImageHandle]:
        """The frames as a model that reads only images gets them: ``"Frame at M:SS.s:"`` before each."""
        out: list[str | ImageHandle] = []
        for frame in self.frames:
            out += [f"Frame at {timestamp(frame.time)}:", frame.image]
        return out

    def __repr__(self) -> str:
        return (
            f"Video({self.name!r}, {self.mime_type}, {self.width}x{self.height}, {self.duration:.1f} s, "
            f"{len(self.frames)} frames, {self.size_bytes:,} bytes)"
        )


def timestamp(seconds: float) -> str:
    """``75.25`` -> ``"1:15.2"``: minutes, then seconds to a tenth (hours when there are any)."""
    tenths = round(seconds * 10)
    minutes, rest = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    clock = f"{minutes}:{rest // 10:02d}.{rest % 10}"
    return f"{hours}:{clock.zfill(7)}" if hours else clock


def prepare_video(
    src: ImageSource,
    name: str | None = None,
    *,
    frames: int | None = None,
    every: float | None = None,
    target: ImagePolicy | None = None,
    max_frames: int = DEFAULT_MAX_FRAMES,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_tokens: int | None = None,
) -> Video:
    """Read a video file or an animated GIF/WebP/PNG and sample its frames (see the module's notes).

    ``frames`` and ``every`` are exclusive. ``target`` sizes the frames (downscaled to its limits) and
    is what ``max_tokens`` is counted for (``openai``, ``anthropic`` or ``gemini``).
    """
    if frames is not None and every is not None:
        raise VideoError("give frames= (how many) or every= (seconds between frames), not both")
    if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
        raise VideoError(f"frames must be a positive number of frames, not {frames!r}")
    if every is not None and not every > 0:
        raise VideoError(f"every must be a positive number of seconds, not {every!r}")
    data, default_name, _ = read_source(src)
    name = name or default_name or f"video-{content_identifier(data)[:12]}"
    if len(data) > max_bytes:
        raise VideoTooLargeError(
            f"{name!r} is {len(data):,} bytes, over max_bytes={max_bytes:,}; cut the video shorter, or raise max_bytes"
        )
    fmt = sniff_format(data)
    source: _Source = _Animation(data, name) if fmt is not None else _open_video(data, name)
    try:
        width, height = source.size
        per_frame = _frame_tokens(width, height, target) if max_tokens is not None else None
        times = _times(source.duration, frames, every, max_frames, max_tokens, per_frame, name)
        sampled = tuple(
            VideoFrame(t, _encode(image, target, f"{name.rsplit('.', 1)[0]}-{t:.2f}s"))
            for t, image in zip(times, source.frames_at(times), strict=True)
        )
    finally:
        source.close()
    mime = fmt.mime_type if fmt is not None else source.mime_type
    return Video(data, name, mime, source.duration, width, height, sampled)


def _times(
    duration: float,
    frames: int | None,
    every: float | None,
    max_frames: int,
    max_tokens: int | None,
    per_frame: int | None,
    name: str,
) -> list[float]:
    """The times to sample, checked against the frame and token limits before anything is decoded."""
    budget = max_frames
    if max_tokens is not None and per_frame is not None:
        budget = min(budget, max_tokens // per_frame)
        if budget < 1:
            raise VideoTooLargeError(
                f"one frame of {name!r} costs about {per_frame} tokens at the target, over max_tokens={max_tokens}; "
                "raise max_tokens, or choose a target with smaller images"
            )
    if every is not None:
        count = max(1, math.ceil(duration / every - 1e-9))
        times = [i * every for i in range(count)]
    else:
        count = frames if frames is not None else min(DEFAULT_FRAMES, budget) if max_tokens is None else budget
        times = [i * duration / count for i in range(count)]
    if len(times) > max_frames:
        how = f"every={every} s gives" if every is not None else "frames= asks for"
        raise VideoTooLargeError(
            f"{how} {len(times)} frames of {name!r} ({duration:.1f} s), over max_frames={max_frames}; "
            f"sample fewer (frames={max_frames}, or every={_at_least(duration, max_frames)}) or raise max_frames"
        )
    if per_frame is not None and max_tokens is not None and len(times) * per_frame > max_tokens:
        raise VideoTooLargeError(
            f"{len(times)} frames of {name!r} cost about {len(times) * per_frame} tokens ({per_frame} each), "
            f"over max_tokens={max_tokens}; sample at most {budget} frames (frames={budget}), "
            "or raise max_tokens"
        )
    return times


def _at_least(duration: float, count: int) -> float:
    """The smallest ``every`` (to a tenth of a second, rounded up) that gives at most ``count`` frames."""
    return math.ceil(duration / count * 10) / 10


def _frame_tokens(width: int, height: int, target: ImagePolicy | None) -> int:
    if target is None or target.name not in ESTIMATORS:
        known = ", ".join(sorted(ESTIMATORS))
        raise VideoError(f"max_tokens= counts tokens at a target: pass target= the policy of one of {known}")
    w, h = target.target_size(width, height)
    return ESTIMATORS[target.name](w, h, "auto")


def _encode(image: Image.Image, target: ImagePolicy | None, stem: str) -> ImageHandle:
    """A frame as a JPEG (frames are photographs), within ``target``'s size limits."""
    if target is not None:
        size = target.target_size(*image.size)
        if size != image.size:
            image = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    if image.mode != "RGB":
        image = image.convert("RGBA").convert("RGB") if "A" in image.mode or image.mode == "P" else image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return image_from_bytes(buf.getvalue(), f"{stem}.jpg")


class _Source:
    duration: float
    size: tuple[int, int]
    mime_type: str

    def frames_at(self, times: list[float]) -> Iterator[Image.Image]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Animation(_Source):
    """An animated GIF, WebP or PNG through Pillow; a still image is one frame long."""

    def __init__(self, data: bytes, name: str) -> None:
        fmt = sniff_format(data)
        assert fmt is not None
        self.mime_type = fmt.mime_type
        try:
            self._image = Image.open(io.BytesIO(data))
            starts, t = [], 0.0
            for frame in ImageSequence.Iterator(self._image):
                frame.load()  # WebP reads a frame's duration with its pixels
                starts.append(t)
                t += max(int(frame.info.get("duration", 100) or 100), 10) / 1000  # browsers' rule for 0 durations
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise InvalidVideoError(f"the animation {name!r} cannot be read ({exc}); the file is damaged") from None
        if len(starts) < 2 or fmt not in (ImageFormat.GIF, ImageFormat.WEBP, ImageFormat.PNG):
            self._image.close()
            raise InvalidVideoError(
                f"{name!r} is a still image ({fmt.mime_type}), not a video or an animation; use prepare_image for it"
            )
        self._starts = starts
        self.duration = t
        self.size = self._image.size

    def frames_at(self, times: list[float]) -> Iterator[Image.Image]:
        for t in times:
            index = max(i for i, start in enumerate(self._starts) if start <= t + 1e-9)
            self._image.seek(index)
            yield self._image.convert("RGBA")

    def close(self) -> None:
        self._image.close()


def _open_video(data: bytes, name: str) -> _Video:
    import av

    try:
        container = av.open(io.BytesIO(data))
    except (av.error.FFmpegError, ValueError) as exc:
        raise InvalidVideoError(
            f"{name!r} is neither an image nor a video FFmpeg reads ({exc}); pass a video file (MP4, WebM, MOV, ...) "
            "or an animated GIF/WebP/PNG"
        ) from None
    if not container.streams.video:
        container.close()
        raise InvalidVideoError(f"{name!r} has no video stream (audio only?)")
    return _Video(container, name)


class _Video(_Source):
    """A video file through PyAV: each sampled time found by seeking to the keyframe before it, then
    decoding up to the frame on screen at that time."""

    def __init__(self, container: Any, name: str) -> None:
        self._container = container
        self._stream = container.streams.video[0]
        self._name = name
        stream = self._stream
        if stream.duration is not None and stream.time_base is not None:
            self.duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            self.duration = container.duration / 1_000_000
        else:
            self.duration = 0.0
        self.size = (stream.codec_context.width, stream.codec_context.height)
        self.mime_type = _CONTAINER_MIME.get(container.format.name.split(",")[0], "video/" + container.format.name)

    def frames_at(self, times: list[float]) -> Iterator[Image.Image]:
        import av

        stream = self._stream
        for t in times:
            try:
                self._container.seek(int(t / stream.time_base), stream=stream, backward=True)
                chosen = None  # the frame on screen at t: the last one that starts by then
                for frame in self._container.decode(stream):
                    if chosen is not None and frame.time is not None and frame.time > t + 1e-3:
                        break
                    chosen = frame
            except av.error.FFmpegError as exc:
                raise InvalidVideoError(f"{self._name!r} cannot be decoded at {timestamp(t)} ({exc})") from None
            if chosen is None:
                raise InvalidVideoError(f"{self._name!r} has no frame at {timestamp(t)}: the file is truncated")
            yield chosen.to_image()

    def close(self) -> None:
        self._container.close()


_CONTAINER_MIME = {
    "mov": "video/mp4",
    "mp4": "video/mp4",
    "matroska": "video/webm",
    "webm": "video/webm",
    "avi": "video/x-msvideo",
    "mpeg": "video/mpeg",
    "mpegts": "video/mp2t",
    "flv": "video/x-flv",
    "asf": "video/x-ms-wmv",
    "3gp": "video/3gpp",
}
