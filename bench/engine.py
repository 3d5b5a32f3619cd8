"""Benchmark the embedded engine against llama-cpp-python's MTMDChatHandler (and llama-server if given).

On a model with SmolVLM-256M-Instruct's exact dimensions (random weights, generated on first use into
bench/.models/; its replies are words that its tokenizer spells back, as a real model's are, so the
follow-up's prompt holds the reply as text), a real photo, 2 threads, temperature 0, 64 tokens:

- first turn: time to first token of a chat about a new image (nothing cached);
- follow-up: time to first token of the next turn of that chat, asked 2 s after the answer (the
  user reads it and types; the same pause for every engine);
- new chat, same image: time to first token of a different chat about the image seen before;
- new process, disk cache (vlmkit only): the first turn again, in a new process whose encoder cache
  on disk holds the image from the run before (each run starts with an empty cache directory, so
  vlmkit's first turn is cold);
- uploaded 5 s earlier (vlmkit only): the first turn about an image that was handed to the engine
  (``engine.prepare``, as ``vlmkit serve`` does on an upload through ``/v1/files``) 5 s before the
  question came, in a new process with an empty disk cache: the encode hides behind the typing;
- decode tokens/s; peak memory (max RSS of the process).

The embedded engine (``vlmkit``) is timed around the call in its own process. The servers
(``vlmkit-serve``, ``llama-server``) get the same HTTP turns, as an OpenAI client sends them, and are
timed where the user waits: from sending the request to the first streamed piece of the reply. A
chat client sends the whole chat every turn, the photo included, and what a server does with the
photo again at each turn (decode, hash, preprocess) is part of the follow-up the user waits for.
llama-server's own count (its ``timings``: prompt evaluation and one token) is printed beside it.

Each engine runs in its own process (so peak memory is its own); each run loads the model fresh.

    python bench/engine.py                      # 5 runs each, medians
    python bench/engine.py --runs 3 --llama-server /path/to/llama-server

Check the machine is quiet first (``uptime``): other work on the cores ruins the figures.

llama-server from the llama.cpp that llama-cpp-python vendors (the same code vlmkit runs on), built
in a few minutes with cmake and a C++ compiler::

    pip download llama-cpp-python==0.3.36 --no-binary :all: --no-deps -d /tmp/lcp
    tar xzf /tmp/lcp/llama_cpp_python-0.3.36.tar.gz -C /tmp/lcp
    cmake -S /tmp/lcp/llama_cpp_python-0.3.36/vendor/llama.cpp -B /tmp/lcp/build \
        -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
    cmake --build /tmp/lcp/build --target llama-server -j
    python bench/engine.py --runs 3 --llama-server /tmp/lcp/build/bin/llama-server
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = HERE / ".models"
DEFAULT_IMAGE = ROOT / "examples" / "images" / "grace_hopper.jpg"
THREADS = 2
MAX_TOKENS = 64
FIRST = "Describe this image."
FOLLOW_UP = "What is the person wearing?"
READ_SEC = 2.0  # the user reads the answer and types the next question: the same pause for every engine
NEW_CHAT = "Who is this? Answer briefly."


def model_files() -> tuple[Path, Path]:
    sys.path.insert(0, str(ROOT / "src"))
    from vlmkit.engine.synthetic import write_smolvlm_256m

    return write_smolvlm_256m(MODELS, words=True)


def user_with_image(text: str, url: str) -> dict[str, Any]:
    return {
        "role": "user",
        "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}],
    }


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- one engine per process -------------------------------------------------------------------------


UPLOAD_LEAD_SEC = 5.0


def run_vlmkit_uploaded(model: Path, mmproj: Path, image: Path) -> dict[str, float]:
    """The image arrives first (prepared in the background), the question UPLOAD_LEAD_SEC later."""
    import threading

    from vlmkit.chat import Chat
    from vlmkit.engine import Engine, LoadOptions
    from vlmkit.images import prepare_image
    from vlmkit.prediction import PredictionConfig

    engine = Engine(default_ttl=None)
    engine.load(model, mmproj=mmproj, key="smol", options=LoadOptions(cpu_threads=THREADS))
    cfg = PredictionConfig(temperature=0, max_tokens=MAX_TOKENS, detail="high")
    handle = prepare_image(image)
    upload = threading.Thread(target=engine.prepare, args=("smol", handle, cfg))
    upload.start()
    time.sleep(UPLOAD_LEAD_SEC)  # the user types the question
    chat = Chat()
    chat.add_user_message(FIRST, images=[handle])
    first = engine.respond("smol", chat, cfg)
    upload.join()
    assert first.stats.images_encoded == 0, first.stats
    return {"uploaded_ttft": first.stats.time_to_first_token_sec or 0.0}


def run_vlmkit(model: Path, mmproj: Path, image: Path, from_disk: bool = False) -> dict[str, float]:
    from vlmkit.chat import Chat
    from vlmkit.engine import Engine, LoadOptions
    from vlmkit.images import prepare_image
    from vlmkit.prediction import PredictionConfig

    engine = Engine(default_ttl=None)
    engine.load(model, mmproj=mmproj, key="smol", options=LoadOptions(cpu_threads=THREADS))
    cfg = PredictionConfig(temperature=0, max_tokens=MAX_TOKENS, detail="high")
    handle = prepare_image(image)
    chat = Chat()
    chat.add_user_message(FIRST, images=[handle])
    first = engine.respond("smol", chat, cfg)
    assert first.stats.images_encoded == (0 if from_disk else 1), first.stats
    if from_disk:
        return {"disk_ttft": first.stats.time_to_first_token_sec or 0.0}
    chat.add_assistant_response(first)
    chat.add_user_message(FOLLOW_UP)
    time.sleep(READ_SEC)
    follow = engine.respond("smol", chat, cfg)
    other = Chat()
    other.add_user_message(NEW_CHAT, images=[handle])
    new = engine.respond("smol", other, cfg)
    assert follow.stats.images_encoded == 0 and new.stats.images_encoded == 0
    return {
        "first_ttft": first.stats.time_to_first_token_sec or 0.0,
        "follow_ttft": follow.stats.time_to_first_token_sec or 0.0,
        "new_chat_ttft": new.stats.time_to_first_token_sec or 0.0,
        "decode_tps": _decode_tps(first.stats.predicted_tokens, first.stats),
        "prompt_tokens": float(first.stats.prompt_tokens),
        "peak_mb": peak_mb(),
    }


def _decode_tps(n: int, stats: Any) -> float:
    gen = stats.total_time_sec - (stats.time_to_first_token_sec or 0.0)
    return (n - 1) / gen if n > 1 and gen > 0 else 0.0


def run_handler(model: Path, mmproj: Path, image: Path, flash: bool) -> dict[str, float]:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import MTMDChatHandler

    llm = Llama(
        model_path=str(model),
        chat_handler=MTMDChatHandler(clip_model_path=str(mmproj), verbose=False),
        n_ctx=8192,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        flash_attn=flash,
        verbose=False,
    )
    url = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()
    messages: list[dict[str, Any]] = [user_with_image(FIRST, url)]

    def turn(msgs: list[dict[str, Any]]) -> tuple[float, float, str]:
        t0 = time.perf_counter()
        t_first = None
        n = 0
        text = []
        for chunk in llm.create_chat_completion(msgs, max_tokens=MAX_TOKENS, temperature=0.0, stream=True):
            choice = chunk["choices"][0]  # type: ignore[index]
            if choice.get("finish_reason"):
                continue
            if t_first is None:
                t_first = time.perf_counter()
            n += 1  # one streamed chunk per generated token, even when its text is empty
            text.append(choice["delta"].get("content") or "")
        t_end = time.perf_counter()
        ttft = (t_first or t_end) - t0
        tps = (n - 1) / (t_end - t_first) if t_first and n > 1 else 0.0
        return ttft, tps, "".join(text)

    first_ttft, tps, reply = turn(messages)
    messages += [
        {"role": "assistant", "content": [{"type": "text", "text": reply}]},  # SmolVLM's template wants parts
        {"role": "user", "content": [{"type": "text", "text": FOLLOW_UP}]},
    ]
    time.sleep(READ_SEC)
    follow_ttft, _, _ = turn(messages)
    new_ttft, _, _ = turn(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": NEW_CHAT}, {"type": "image_url", "image_url": {"url": url}}],
            }
        ]
    )
    llm.close()
    return {
        "first_ttft": first_ttft,
        "follow_ttft": follow_ttft,
        "new_chat_ttft": new_ttft,
        "decode_tps": tps,
        "peak_mb": peak_mb(),
    }


def _serve_turns(base: str, image: Path, proc: subprocess.Popen[bytes], model: str) -> dict[str, float]:
    """The three turns over HTTP, as any OpenAI client sends them, timed where the user waits: from
    sending the request to the first streamed piece of the reply. Every turn sends the whole chat,
    the photo included, as a data URL; what a server does with it again (decode, hash, preprocess)
    is part of its follow-up. The server's own count (llama-server's ``timings``: prompt evaluation
    and one token, leaving out the request's parsing and the image's preparation) is kept beside it."""
    import httpx

    for _ in range(1200):
        if proc.poll() is not None:
            raise RuntimeError(f"{base}: the server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/v1/models", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    url = "data:image/jpeg;base64," + base64.b64encode(image.read_bytes()).decode()

    def turn(client: httpx.Client, msgs: list[dict[str, Any]]) -> tuple[float, float, float | None, str]:
        body = {
            "model": model,
            "messages": msgs,
            "max_tokens": MAX_TOKENS,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        text: list[str] = []
        t_first = None
        n_tokens = 0
        timings: dict[str, float] | None = None
        t0 = time.perf_counter()
        with client.stream("POST", base + "/v1/chat/completions", json=body, timeout=300) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece is not None:
                        t_first = t_first or time.perf_counter()
                        text.append(piece)
                if chunk.get("usage"):
                    n_tokens = chunk["usage"].get("completion_tokens") or n_tokens
                timings = chunk.get("timings") or timings
        t_end = time.perf_counter()
        ttft = (t_first or t_end) - t0
        own = (timings["prompt_ms"] + 1000.0 / timings["predicted_per_second"]) / 1000 if timings else None
        if timings:
            tps = timings["predicted_per_second"]
        else:
            tps = (n_tokens - 1) / (t_end - t_first) if t_first and n_tokens > 1 else 0.0
        return ttft, tps, own, "".join(text)

    # a connection a turn: a server may close an idle kept-alive one between turns (llama-server did, mid-run)
    with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as client:
        # a short text turn first: a server that loads its model on the first request (vlmkit serve)
        # has it loaded, as llama-server has at start, and neither has seen the photo
        turn(client, [{"role": "user", "content": "Hello"}])
        first, tps, first_own, reply = turn(client, [user_with_image(FIRST, url)])
        msgs = [user_with_image(FIRST, url), {"role": "assistant", "content": reply}]
        msgs.append({"role": "user", "content": FOLLOW_UP})
        time.sleep(READ_SEC)
        follow, _, follow_own, _ = turn(client, msgs)
        new, _, new_own, _ = turn(client, [user_with_image(NEW_CHAT, url)])
    with open(f"/proc/{proc.pid}/status") as f:
        peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    out = {"first_ttft": first, "follow_ttft": follow, "new_chat_ttft": new, "decode_tps": tps, "peak_mb": peak}
    if first_own is not None and follow_own is not None and new_own is not None:
        out |= {"first_own": first_own, "follow_own": follow_own, "new_chat_own": new_own}
    return out


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_llama_server(binary: str, model: Path, mmproj: Path, image: Path) -> dict[str, float]:
    port = _free_port()
    cmd = [binary, "-m", str(model), "--mmproj", str(mmproj), "-t", str(THREADS), "-c", "8192"]
    cmd += ["--port", str(port), "-fa", "on", "--no-webui"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        try:
            return _serve_turns(f"http://127.0.0.1:{port}", image, proc, "smol")
        except Exception:
            log.seek(0)
            print(log.read().decode(errors="replace")[-4000:], file=sys.stderr)
            raise
        finally:
            proc.terminate()
            proc.wait()


def run_vlmkit_serve(model: Path, mmproj: Path, image: Path) -> dict[str, float]:
    """``vlmkit serve`` with the same model, asked exactly as llama-server is (the same HTTP turns)."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "serve.yaml"
        cfg.write_text(json.dumps({"models": {"smol": {"path": str(model), "mmproj": str(mmproj)}}}))
        cmd = [sys.executable, "-m", "vlmkit.cli", "serve", "--config", str(cfg), "--port", str(port)]
        proc = subprocess.Popen([*cmd, "--log-level", "warning"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return _serve_turns(f"http://127.0.0.1:{port}", image, proc, "smol")
        finally:
            proc.terminate()
            proc.wait()


# --- driver -----------------------------------------------------------------------------------------------


def child(name: str, image: Path, server: str | None) -> None:
    model, mmproj = model_files()
    if name == "vlmkit":
        out = run_vlmkit(model, mmproj, image)
    elif name == "vlmkit-disk":
        out = run_vlmkit(model, mmproj, image, from_disk=True)
    elif name == "vlmkit-uploaded":
        out = run_vlmkit_uploaded(model, mmproj, image)
    elif name == "handler-fa-off":
        out = run_handler(model, mmproj, image, flash=False)
    elif name == "handler-fa-on":
        out = run_handler(model, mmproj, image, flash=True)
    elif name == "vlmkit-serve":
        out = run_vlmkit_serve(model, mmproj, image)
    elif name == "llama-server" and server:
        out = run_llama_server(server, model, mmproj, image)
    else:
        raise SystemExit(f"unknown engine {name}")
    print(json.dumps(out), flush=True)
    os._exit(0)  # skip interpreter teardown (llama-cpp-python's handler can fail there)


def _run_child(cmd: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:5])} failed ({done.returncode}):\n{done.stderr[-8000:]}")
    return done.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    ap.add_argument("--llama-server", help="path to llama.cpp's llama-server binary, to compare with it too")
    ap.add_argument(
        "--only",
        help="comma-separated engines to run (vlmkit, handler-fa-off, handler-fa-on, vlmkit-serve, llama-server)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.image, args.llama_server)
        return

    model_files()  # generate once, before timing anything
    engines = ["vlmkit", "handler-fa-off", "handler-fa-on"]
    engines += ["vlmkit-serve", "llama-server"] if args.llama_server else ["vlmkit-serve"]
    if args.only:
        engines = [e for e in engines if e in args.only.split(",")]
    print(f"load average before: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    results: dict[str, list[dict[str, float]]] = {e: [] for e in engines}
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    for run in range(args.runs):
        for name in engines:  # interleaved, so drift in machine load hits every engine alike
            cmd = [sys.executable, __file__, "--child", name, "--image", str(args.image)]
            if args.llama_server:
                cmd += ["--llama-server", args.llama_server]
            with tempfile.TemporaryDirectory() as cache:
                run_env = dict(env, VLMKIT_CACHE_DIR=cache)  # vlmkit's encoder cache on disk starts empty
                out = _run_child(cmd, run_env)
                results[name].append(json.loads(out.strip().splitlines()[-1]))
                if name == "vlmkit":  # the same photo in a new process: the disk cache from the run above
                    cmd[cmd.index("vlmkit")] = "vlmkit-disk"
                    out = _run_child(cmd, run_env)
                    results[name][-1].update(json.loads(out.strip().splitlines()[-1]))
            if name == "vlmkit":  # uploaded before the question, with an empty disk cache of its own
                with tempfile.TemporaryDirectory() as cache:
                    cmd[cmd.index("vlmkit-disk")] = "vlmkit-uploaded"
                    run_env = dict(env, VLMKIT_CACHE_DIR=cache)
                    out = _run_child(cmd, run_env)
                    results[name][-1].update(json.loads(out.strip().splitlines()[-1]))
            print(f"run {run + 1} {name}: {results[name][-1]}", file=sys.stderr)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)

    cols = ["first_ttft", "follow_ttft", "new_chat_ttft", "decode_tps", "peak_mb"]
    print(
        f"\nmedians of {args.runs} runs; image {args.image.name}; {THREADS} threads; temperature 0; {MAX_TOKENS} tokens"
    )
    header = ["engine", "first turn TTFT (s)", "follow-up TTFT (s)", "new chat, same image TTFT (s)"]
    header += ["new process, disk cache TTFT (s)", "uploaded 5 s earlier TTFT (s)", "decode (tok/s)", "peak RSS (MB)"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        med = {c: statistics.median(r[c] for r in runs) for c in cols}
        disk = f"{statistics.median(r['disk_ttft'] for r in runs):.2f}" if "disk_ttft" in runs[0] else "—"
        up = f"{statistics.median(r['uploaded_ttft'] for r in runs):.2f}" if "uploaded_ttft" in runs[0] else "—"
        print(
            f"| {name} | {med['first_ttft']:.2f} | {med['follow_ttft']:.2f} | {med['new_chat_ttft']:.2f} | "
            f"{disk} | {up} | {med['decode_tps']:.1f} | {med['peak_mb']:.0f} |"
        )
    own = {name: runs for name, runs in results.items() if "follow_own" in runs[0]}
    if own:
        print("\nthe server's own count (prompt evaluation and one token, not the request or the image)")
        print("| engine | first turn (s) | follow-up (s) | new chat, same image (s) |")
        print("|---|---|---|---|")
        for name, runs in own.items():
            med = {c: statistics.median(r[c] for r in runs) for c in ("first_own", "follow_own", "new_chat_own")}
            print(f"| {name} | {med['first_own']:.2f} | {med['follow_own']:.3f} | {med['new_chat_own']:.2f} |")


if __name__ == "__main__":
    main()
