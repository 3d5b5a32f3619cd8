"""The ``vlmkit`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from vlmkit.errors import VlmkitError

if TYPE_CHECKING:
    from vlmkit.client.terminal import Settings
    from vlmkit.images.fetch import FetchOptions


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        code: int = args.run(args)
    except VlmkitError as exc:
        print(f"vlmkit: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmkit", description="Images into vision-language models.")
    parser.add_argument(
        "--version", action=_Version, help="print vlmkit's version and the backend models run on, and exit"
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    image = commands.add_parser("image", help="look at an image the way vlmkit sees it")
    image_commands = image.add_subparsers(title="image commands", metavar="COMMAND")
    inspect = image_commands.add_parser(
        "inspect", help="sniff and validate an image; show what each target would be sent"
    )
    inspect.add_argument("source", help="a file path or an http(s)://, data:, file:// URL")
    inspect.add_argument(
        "--target", action="append", help="only these targets (openai, anthropic, gemini, bedrock, ollama, llama.cpp)"
    )
    _allow_host_argument(inspect)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(run=_image_inspect)

    get = commands.add_parser("get", help="download a model (catalog key, hub repo/name, or local .gguf)")
    get.add_argument("key", help="e.g. smolvlm-256m, qwen2-vl-2b-instruct, ggml-org/SmolVLM-256M-Instruct-GGUF")
    get.add_argument("--mmproj", help="the vision projector .gguf, with a local model file")
    get.add_argument("--endpoint", help="a Hugging Face hub mirror (default: HF_ENDPOINT or the hub)")
    get.set_defaults(run=_get)

    ls = commands.add_parser("ls", help="list downloaded models")
    ls.add_argument("--catalog", action="store_true", help="list the catalog's keys instead")
    ls.set_defaults(run=_ls)

    rm = commands.add_parser("rm", help="delete a downloaded model")
    rm.add_argument("key")
    rm.set_defaults(run=_rm)

    cache = commands.add_parser("cache", help="the on-disk cache of image embeddings (shared by every model)")
    cache_commands = cache.add_subparsers(title="cache commands", metavar="COMMAND")
    cache_commands.add_parser("ls", help="where the cache is, and how much it holds").set_defaults(run=_cache_ls)
    cache_commands.add_parser("clear", help="delete every cached embedding").set_defaults(run=_cache_clear)

    describe = commands.add_parser("describe", help="describe an image with a vision model, streaming the answer")
    describe.add_argument("image", help="an image file path or URL")
    describe.add_argument("--prompt", default=None, help='what to ask (default: "Describe this image.")')
    describe.add_argument(
        "--boxes", metavar="OUT.png", default=None, help="draw the boxes and points of the answer on the image"
    )
    describe.add_argument(
        "--coords", metavar="FAMILY", default=None, help="how the model writes coordinates (default: from the model)"
    )
    _model_arguments(describe)
    _allow_host_argument(describe)
    describe.set_defaults(run=_describe)

    chat = commands.add_parser("chat", help="an interactive multi-turn chat about one or more images")
    chat.add_argument("--image", action="append", required=True, help="an image to talk about (repeatable)")
    chat.add_argument("--system", help="a system prompt")
    _model_arguments(chat)
    _allow_host_argument(chat)
    chat.set_defaults(run=_chat)

    _batch_parser(commands)

    serve = commands.add_parser("serve", help="serve local and gateway models over an OpenAI-compatible HTTP API")
    serve.add_argument("--host", default=None, help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=None, help="port (default 8000)")
    serve.add_argument("--config", help="YAML file: api_keys, models (gateway deployments, local GGUFs), limits")
    serve.add_argument(
        "--api-key", action="append", default=[], help="require this key (repeatable; also VLMKIT_API_KEY)"
    )
    serve.add_argument("--files-dir", help="keep uploaded images here, across restarts (default: in memory only)")
    serve.add_argument(
        "--lmstudio-discovery",
        action="store_true",
        help="also listen on LM Studio's discovery port 41343, so LM Studio's SDKs find the server with no host",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one JSON object a line (no image bytes)"
    )
    _gpu_argument(serve, "for every local model (a model's own `gpu:` in --config wins)")
    serve.set_defaults(run=_serve)
    return parser


def _get(args: argparse.Namespace) -> int:
    from vlmkit.engine.download import get

    stored = get(args.key, mmproj=args.mmproj, endpoint=args.endpoint, progress=sys.stderr.isatty())
    print(f"{stored.key}: {stored.directory} ({stored.size_bytes / 1e6:,.1f} MB)")
    return 0


def _ls(args: argparse.Namespace) -> int:
    from vlmkit.engine import catalog, list_downloaded

    if args.catalog:
        for entry in catalog().values():
            print(f"{entry.key:<28} {entry.repo}")
        return 0
    models = list_downloaded()
    if not models:
        print("no models downloaded; `vlmkit ls --catalog` lists what `vlmkit get KEY` can fetch")
    else:
        print(f"{'KEY':<28} {'SIZE':>10}  {'VISION':<6}  {'ARCH':<12}  CONTEXT")
        for m in models:
            vision, arch, context = "yes" if m.vision else "no", m.architecture or "?", m.context_length or "?"
            print(f"{m.key:<28} {m.size_bytes / 1e6:>8.1f}MB  {vision:<6}  {arch:<12}  {context}")
    print(f"models run on: {_backend()}")
    return 0


def _backend() -> str:
    from vlmkit.engine.gpu import choose

    return choose("auto").reason


class _Version(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        from vlmkit._version import __version__
        from vlmkit.engine import native

        print(f"vlmkit {__version__} (llama-cpp-python {native.version()}); models run on: {_backend()}")
        parser.exit()


def _cache_ls(args: argparse.Namespace) -> int:
    from vlmkit.engine.encoder_cache import MB, summary

    s = summary()
    print(f"{s.directory}: {s.entries} image embeddings, {s.size_bytes / MB:,.1f} MB of {s.limit_bytes // MB:,} MB")
    if not s.limit_bytes:
        print("the cache is off (VLMKIT_ENCODER_CACHE_MB=0)")
    return 0


def _cache_clear(args: argparse.Namespace) -> int:
    from vlmkit.engine.encoder_cache import MB, clear, embeddings_dir

    removed, freed = clear()
    print(f"removed {removed} image embeddings ({freed / MB:,.1f} MB) from {embeddings_dir()}")
    return 0


def _rm(args: argparse.Namespace) -> int:
    from vlmkit.engine import remove

    print(f"removed {remove(args.key)}")
    return 0


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="a model key or .gguf path (default: the first downloaded vision model)")
    parser.add_argument("--max-tokens", type=int, help="the most tokens an answer may take")
    parser.add_argument("--threads", type=int, help="CPU threads for the model")
    _gpu_argument(parser, "for the model")
    parser.add_argument("--stats", action="store_true", help="print each answer's speed and reuse to stderr")


def _gpu_argument(parser: argparse.ArgumentParser, what: str) -> None:
    def gpu(value: str) -> str | int:
        from vlmkit.engine.gpu import parse_gpu

        try:
            return parse_gpu(value, "--gpu")
        except VlmkitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parser.add_argument(
        "--gpu",
        type=gpu,
        default=None,
        metavar="auto|off|N",
        help=f"where to run, {what}: auto (the GPU when llama.cpp was built with one; the default), "
        "off (the CPU), or N layers on the GPU",
    )


def _allow_host_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let image URLs reach this private or loopback host, address or network (repeatable)",
    )


def _fetch_options(args: argparse.Namespace) -> FetchOptions:
    """How this command fetches image URLs; its refusals name the command line's own options."""
    from vlmkit.images.fetch import FetchOptions, FetchRemedies

    command_line = "download the image yourself and pass its path"
    remedies = FetchRemedies(
        allow_hosts="pass --allow-host HOST (repeatable; host names, addresses and CIDR networks)",
        max_bytes=command_line,
        timeout=command_line,
        max_redirects=command_line,
    )
    return FetchOptions(allow_hosts=frozenset(args.allow_host), remedies=remedies)


def _settings(args: argparse.Namespace) -> Settings:
    from vlmkit.client.terminal import Settings

    return Settings(
        model=args.model,
        max_tokens=args.max_tokens,
        threads=args.threads,
        gpu=args.gpu,
        stats=args.stats,
        fetch=_fetch_options(args),
    )


def _describe(args: argparse.Namespace) -> int:
    from vlmkit.client import Client
    from vlmkit.client.terminal import DEFAULT_PROMPT, GROUNDING_PROMPT, describe, draw_boxes

    prompt = args.prompt or (GROUNDING_PROMPT if args.boxes else DEFAULT_PROMPT)
    with Client(timeout=None) as client:
        result = describe(client, args.image, prompt, _settings(args), sys.stdout, sys.stderr)
    if args.boxes:
        draw_boxes(result, args.boxes, args.coords, sys.stderr)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from vlmkit.client import Client
    from vlmkit.client.terminal import chat

    with Client(timeout=None) as client:
        chat(client, args.image, _settings(args), sys.stdin, sys.stdout, sys.stderr, system=args.system)
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    try:
        from vlmkit.server import ServerSettings, load_config, serve
    except ModuleNotFoundError as exc:
        raise VlmkitError(
            f"vlmkit serve needs the server extra ({exc.name} is not installed): pip install 'vlmkit[server]'"
        ) from None

    settings = load_config(args.config) if args.config else ServerSettings()
    keys = set(args.api_key) | ({os.environ["VLMKIT_API_KEY"]} if os.environ.get("VLMKIT_API_KEY") else set())
    if keys:
        settings = settings.with_overrides(api_keys=settings.api_keys | keys)
    settings = settings.with_overrides(host=args.host, port=args.port, files_dir=args.files_dir, gpu=args.gpu)
    settings = settings.with_overrides(lmstudio_discovery=args.lmstudio_discovery or None)
    serve(settings, log_level=args.log_level, log_format=args.log_format)
    return 0


def _batch_parser(commands: Any) -> None:
    from vlmkit.batch.command import add_arguments

    batch = commands.add_parser("batch", help="ask a model about every image of a folder, list or table, with resume")
    add_arguments(batch)
    _allow_host_argument(batch)
    batch.set_defaults(run=_batch)


def _batch(args: argparse.Namespace) -> int:
    from vlmkit.batch.command import run_command

    return run_command(args, _fetch_options(args), sys.stdout, sys.stderr)


def _image_inspect(args: argparse.Namespace) -> int:
    from vlmkit.images import POLICIES, estimate_image_tokens, prepare_image
    from vlmkit.images.probe import image_summary
    from vlmkit.images.render import needs_change

    handle = prepare_image(args.source, fetch=_fetch_options(args))
    names = args.target or list(POLICIES)
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise VlmkitError(f"unknown target {unknown[0]!r}; known: {', '.join(POLICIES)}")
    targets: dict[str, Any] = {}
    for name in names:
        policy = POLICIES[name]
        reasons = needs_change(handle, policy)
        out = handle.render(policy)
        targets[name] = {
            "sent_as": "original bytes" if not out.changed else "re-encoded",
            "why": reasons,
            "mime_type": out.mime_type,
            "width": out.width,
            "height": out.height,
            "bytes": len(out.data),
        }
    tokens = {t: estimate_image_tokens(handle, t) for t in ("openai", "anthropic", "gemini")}
    report = {
        "name": handle.name,
        "identifier": handle.identifier,
        "mime_type": handle.mime_type,
        "width": handle.width,
        "height": handle.height,
        "frames": handle.frames,
        "exif_orientation": handle.orientation,
        "mode": handle.mode,
        "bytes": handle.size_bytes,
        "tokens": tokens,
        "targets": targets,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{handle.name}: {image_summary(handle.mime_type, handle.width, handle.height, handle.size_bytes)}")
    print(f"  identifier   {handle.identifier}")
    print(f"  frames {handle.frames}, EXIF orientation {handle.orientation}, pixels {handle.mode}")
    print("  tokens       " + ", ".join(f"{k} {v}" for k, v in tokens.items()))
    for name, t in targets.items():
        line = f"  {name:<12} {t['sent_as']}: {t['mime_type']} {t['width']}x{t['height']}, {t['bytes']:,} bytes"
        print(line + (f" ({'; '.join(t['why'])})" if t["why"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
