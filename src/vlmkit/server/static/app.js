// The playground page: images in (drop, paste, pick, URL), what each target gets, and a chat.
// Images go up once through /v1/files and are named by their id afterwards; a URL is named as it is
// and fetched by the server. Nothing is kept but the key, in this tab's session storage.

import { ApiError, apiKey, getJSON, imageURL, postJSON, setApiKey, streamChat, uploadFile } from "./api.js";
import { overlay, parseBoxes } from "./boxes.js";

const $ = (selector) => document.querySelector(selector);

const state = {
  models: [],
  images: [], // {id?, url?, name, display, sent, li, report}
  selected: null,
  messages: [], // OpenAI-format history
  controller: null,
};

// --- status and errors ------------------------------------------------------------------------

function say(text, error = false) {
  const status = $("#status");
  status.textContent = text;
  status.classList.toggle("error", error);
}

function failed(what, err) {
  if (err instanceof ApiError && err.status === 401) {
    say(`${what}: ${err.message}. Type the server's API key above.`, true);
    $("#key").focus();
  } else {
    say(`${what}: ${err.message}`, true);
  }
}

// --- the key ------------------------------------------------------------------------------------

function readKeyFromFragment() {
  // `vlmkit playground` may open the page as /#key=...: taken into session storage, then out of the address bar
  const match = /(?:^|&)key=([^&]+)/.exec(location.hash.slice(1));
  if (match) {
    setApiKey(decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

// --- models -------------------------------------------------------------------------------------

async function loadModels() {
  const select = $("#model");
  try {
    const list = await getJSON("/v1/models");
    state.models = list.data;
  } catch (err) {
    state.models = [];
    select.replaceChildren();
    failed("Could not list the models", err);
    return;
  }
  const previous = select.value;
  select.replaceChildren(
    ...state.models.map((m) => {
      const option = new Option(`${m.id}${m.vision ? " (vision)" : ""}`, m.id);
      option.dataset.vision = String(Boolean(m.vision));
      option.dataset.type = m.type || "";
      return option;
    }),
  );
  const keep = state.models.find((m) => m.id === previous) || state.models.find((m) => m.vision) || state.models[0];
  if (keep) select.value = keep.id;
  say(state.models.length ? `${state.models.length} model(s) served.` : "This server serves no models yet.");
}

function chosenModel() {
  return state.models.find((m) => m.id === $("#model").value) || null;
}

// --- images -------------------------------------------------------------------------------------

function thumbnail(image) {
  const li = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.setAttribute("aria-pressed", "false");
  button.setAttribute("aria-label", `Inspect ${image.name}`);
  const img = document.createElement("img");
  img.alt = "";
  img.src = image.display;
  button.append(img);
  button.addEventListener("click", () => select(image));
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = image.name;
  const sent = document.createElement("span");
  sent.className = "sent";
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `Remove ${image.name}`);
  remove.addEventListener("click", () => removeImage(image));
  li.append(button, name, sent, remove);
  image.li = li;
  $("#thumbs").append(li);
}

function markSent(image) {
  image.li.querySelector(".sent").textContent = image.sent ? "in the chat" : "";
}

function removeImage(image) {
  state.images = state.images.filter((i) => i !== image);
  image.li.remove();
  if (state.selected === image) {
    state.selected = null;
    clearInspection();
  }
}

/** The browser shows the upload itself when it can decode it; otherwise (HEIC, AVIF...) its JPEG rendering. */
function decodable(src) {
  return new Promise((resolve) => {
    const probe = new Image();
    probe.onload = () => resolve(probe.naturalWidth > 0);
    probe.onerror = () => resolve(false);
    probe.src = src;
  });
}

async function addFiles(files) {
  for (const file of files) {
    say(`Uploading ${file.name || "the pasted image"}…`);
    try {
      const stored = await uploadFile(file);
      let display = URL.createObjectURL(file);
      if (!(await decodable(display))) {
        display = await imageURL(`/v1/images/preview?file_id=${stored.id}&target=openai`);
      }
      const image = { id: stored.id, name: stored.filename, display, sent: false };
      state.images.push(image);
      thumbnail(image);
      say(`Uploaded ${image.name} as ${stored.id}: ${stored.mime_type}, ${stored.width}×${stored.height}.`);
      await select(image);
    } catch (err) {
      failed(`Could not add ${file.name || "the image"}`, err);
    }
  }
}

async function addURL(url) {
  let name;
  try {
    name = decodeURIComponent(new URL(url).pathname.split("/").pop() || url);
  } catch {
    return say(`${url} is not a URL: give an http(s):// address of an image.`, true);
  }
  const image = { url, name, display: url, sent: false };
  try {
    await inspect(image); // the server fetches it: a URL it refuses is said here, not in the chat
  } catch (err) {
    failed(`Could not use ${url}`, err);
    return;
  }
  if (!(await decodable(url))) image.display = image.report.targets.find((t) => t.target === "openai")?.preview || url;
  state.images.push(image);
  thumbnail(image);
  await select(image);
}

async function select(image) {
  state.selected = image;
  for (const other of state.images) other.li.querySelector(".thumb").setAttribute("aria-pressed", String(other === image));
  try {
    await inspect(image);
  } catch (err) {
    failed(`Could not inspect ${image.name}`, err);
  }
}

// --- inspection ---------------------------------------------------------------------------------

function bytes(n) {
  if (n == null) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

function imageSettings() {
  const cap = $("#image-max-tokens").value;
  return { detail: $("#detail").value, image_max_tokens: cap ? Number(cap) : undefined };
}

async function inspect(image) {
  const model = chosenModel();
  const body = { image: image.id || image.url, detail: $("#detail").value };
  if (model && model.vision) {
    body.model = model.id;
    if (model.type === "local" && imageSettings().image_max_tokens) body.image_max_tokens = imageSettings().image_max_tokens;
  }
  say(`Inspecting ${image.name}…`);
  const response = await postJSON("/v1/images/inspect", body);
  image.report = await response.json();
  if (state.selected === image || !state.selected) showInspection(image);
  say(`${image.name}: what each target gets.`);
}

function clearInspection() {
  $("#inspect-table tbody").replaceChildren();
  $(".table-wrap").hidden = true;
  $("#inspect-summary").textContent = "Add an image to see what each target would be sent.";
  $("#preview").hidden = true;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function showInspection(image) {
  const r = image.report;
  const facts = [`${r.mime_type}, ${r.width}×${r.height}, ${bytes(r.bytes)}`];
  if (r.exif_orientation !== 1) facts.push(`EXIF orientation ${r.exif_orientation}`);
  if (r.frames > 1) facts.push(`${r.frames} frames`);
  $("#inspect-summary").textContent = `${r.name}: ${facts.join(", ")}. Prices as of ${r.prices.as_of}.`;
  $("#inspect-summary").title = r.prices.about;
  const rows = r.targets.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.target = t.target;
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = t.target === "model" ? `${t.model} (${t.kind})` : t.target;
    tr.append(th);
    if (t.target === "model") tr.className = "model";
    if (t.error) {
      const td = cell(t.error);
      td.colSpan = 7;
      tr.append(td);
      return tr;
    }
    const how = t.untouched ? "untouched" : t.changes.join(", ");
    const sentAs = cell(how, t.untouched ? "untouched" : "changed");
    if (t.why.length) sentAs.title = t.why.join("; ");
    const tokens = t.tokens == null ? "set by the model" : String(t.tokens);
    const tokensCell = cell(tokens, "num");
    if (t.token_rule === "measured") {
      tokensCell.textContent += " (measured)";
      if (t.image_size) tokensCell.title = `counted by the model's projector, at ${t.image_size.width}×${t.image_size.height}`;
    } else if (t.token_rule) {
      tokensCell.title = `estimated by ${t.token_rule}'s documented rule`;
    }
    const local = t.kind === "local" || t.target === "ollama" || t.target === "llama.cpp";
    let cost = t.cost_usd == null ? "no price" : `$${t.cost_usd.toFixed(5)}`;
    if (local) cost = "free (local)";
    const costCell = cell(cost, "num");
    costCell.title = t.price_model ? `at ${t.price_model}'s input price` : local ? "" : "no price for this model in vlmkit's price table";
    const bytesCell = cell(bytes(t.bytes), "num");
    bytesCell.title = `${t.bytes.toLocaleString("en-US")} bytes`;
    tr.append(cell(t.mime_type), cell(`${t.width}×${t.height}`, "num"), bytesCell, sentAs, tokensCell, costCell);
    const td = document.createElement("td");
    if (t.preview) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Show";
      button.setAttribute("aria-label", `Show what ${th.textContent} is sent`);
      button.addEventListener("click", () => showPreview(t, th.textContent));
      td.append(button);
    }
    tr.append(td);
    return tr;
  });
  $("#inspect-table tbody").replaceChildren(...rows);
  $(".table-wrap").hidden = false;
}

async function showPreview(t, label) {
  const figure = $("#preview");
  const img = figure.querySelector("img");
  try {
    img.src = await imageURL(t.preview);
  } catch (err) {
    failed("Could not load the preview", err);
    return;
  }
  img.width = t.width; // at its real size: what the target's model gets, pixel for pixel
  img.height = t.height;
  img.alt = `${label}: the image as sent`;
  figure.querySelector("figcaption").textContent = `${label}: ${t.mime_type}, ${t.width}×${t.height}, ${bytes(t.bytes)}, at its real size`;
  figure.hidden = false;
}

// --- chat ---------------------------------------------------------------------------------------

function settingsBody(model) {
  const body = { model: model.id, stream_options: { include_usage: true } };
  const temperature = $("#temperature").value;
  if (temperature !== "") body.temperature = Number(temperature);
  const maxTokens = $("#max-tokens").value;
  if (maxTokens !== "") body.max_tokens = Number(maxTokens);
  const { detail, image_max_tokens } = imageSettings();
  if (model.type === "local") {
    body.detail = detail;
    if (image_max_tokens) body.image_max_tokens = image_max_tokens;
  }
  const schema = $("#schema").value.trim();
  if (schema) {
    let parsed;
    try {
      parsed = JSON.parse(schema);
    } catch (err) {
      throw new Error(`the JSON schema is not valid JSON (${err.message})`);
    }
    body.response_format = { type: "json_schema", json_schema: { name: "answer", schema: parsed } };
  }
  return body;
}

function messageItem(role, text) {
  const li = document.createElement("li");
  li.className = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : $("#model").value;
  const p = document.createElement("p");
  p.className = "text";
  p.textContent = text;
  li.append(who, p);
  $("#messages").append(li);
  return li;
}

function statsLine(s, usage, clock) {
  const parts = [];
  if (s) {
    if (s.time_to_first_token_sec != null) parts.push(`first token ${s.time_to_first_token_sec.toFixed(2)} s`);
    if (s.tokens_per_second != null) parts.push(`${s.tokens_per_second.toFixed(1)} tokens/s`);
    parts.push(`${s.predicted_tokens} tokens`);
    parts.push(`prompt ${s.prompt_tokens} tokens (${s.cached_prompt_tokens} reused)`);
    parts.push(`images ${s.images_encoded} encoded, ${s.images_reused} reused`);
    if (s.image_tokens) parts.push(`${s.image_tokens} image tokens${s.image_sizes.length ? ` at ${s.image_sizes.join(", ")}` : ""}`);
    parts.push(`stop: ${s.stop_reason}`);
  } else {
    if (clock.first != null) parts.push(`first token ${((clock.first - clock.start) / 1000).toFixed(2)} s`);
    if (usage) parts.push(`${usage.completion_tokens} tokens`, `prompt ${usage.prompt_tokens} tokens`);
  }
  return parts.join(" · ");
}

/** The image the answer's boxes are on: the last one in the chat, drawn at its original size. */
function drawBoxes(li, text, stats) {
  const images = state.images.filter((i) => i.sent);
  const image = images[images.length - 1];
  if (!image) return;
  let seen = null;
  const sizes = stats?.image_sizes || [];
  if (sizes.length) {
    const [w, h] = sizes[sizes.length - 1].split("x").map(Number);
    seen = { width: w, height: h };
  } else if (image.report) {
    seen = { width: image.report.width, height: image.report.height };
  }
  const shapes = parseBoxes(text, seen);
  if (!shapes.length) return;
  const figure = document.createElement("figure");
  figure.className = "grounded";
  const img = document.createElement("img");
  img.src = image.display;
  img.alt = `${image.name} with ${shapes.length} region(s) from the answer`;
  figure.append(img, overlay(shapes));
  li.append(figure);
  img.addEventListener("load", () => figure.scrollIntoView({ block: "nearest" }));
}

/** Change the messages with `change`, keeping the newest in view unless the reader had scrolled up to read. */
function follow(change) {
  const list = $("#messages");
  const atEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  change();
  if (atEnd) list.scrollTop = list.scrollHeight;
}

function busy(on) {
  $("#send").disabled = on;
  $("#stop").disabled = !on;
}

async function send() {
  const model = chosenModel();
  const text = $("#prompt").value.trim();
  if (!model) return say("Choose a model first.", true);
  if (!text) return say("Type a message first.", true);
  let body;
  try {
    body = settingsBody(model);
  } catch (err) {
    return say(`Not sent: ${err.message}`, true);
  }
  const pending = state.images.filter((i) => !i.sent);
  if (pending.length && !model.vision) return say(`${model.id} does not take images; choose a vision model, or remove the images.`, true);
  const content = [{ type: "text", text }];
  for (const image of pending) {
    const part = { url: image.id || image.url };
    if (model.type !== "local") part.detail = $("#detail").value;
    content.push({ type: "image_url", image_url: part });
  }
  const user = { role: "user", content };
  const userItem = messageItem("user", text);
  if (pending.length) {
    const attached = document.createElement("p");
    attached.className = "attached";
    attached.textContent = `with ${pending.map((i) => i.name).join(", ")}`;
    userItem.append(attached);
  }
  $("#prompt").value = "";
  const li = messageItem("assistant", "");
  li.setAttribute("aria-busy", "true");
  $("#messages").scrollTop = $("#messages").scrollHeight;
  const out = li.querySelector(".text");
  const controller = new AbortController();
  state.controller = controller;
  busy(true);
  say(`${model.id} is answering… (Escape or Stop to stop it)`);
  let answer = "";
  let stats = null;
  let usage = null;
  const clock = { start: performance.now(), first: null };
  const note = document.createElement("p");
  note.className = "stats";
  // text is added once a frame, however fast tokens come: the page stays responsive at any speed
  let unshown = "";
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (!unshown) return;
    const text = unshown;
    unshown = "";
    follow(() => out.append(text));
  };
  try {
    await streamChat({ ...body, messages: [...state.messages, user] }, controller.signal, (chunk) => {
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) {
        if (clock.first == null) clock.first = performance.now();
        answer += delta;
        unshown += delta;
        if (!scheduled) {
          scheduled = true;
          requestAnimationFrame(flush);
        }
      }
      if (chunk.stats) stats = chunk.stats;
      if (chunk.usage) usage = chunk.usage;
    });
    note.textContent = statsLine(stats, usage, clock);
    say(`${model.id} answered.`);
  } catch (err) {
    if (controller.signal.aborted) {
      note.textContent = `stopped after ${answer.split(/\s+/).filter(Boolean).length} words`;
      note.classList.add("stopped");
      say("Stopped: the server cancels the generation when the page lets go of the request.");
    } else {
      note.textContent = `failed: ${err.message}`;
      note.classList.add("failed");
      failed("The chat failed", err);
    }
  } finally {
    flush();
    follow(() => li.append(note));
    li.removeAttribute("aria-busy");
    state.controller = null;
    busy(false);
  }
  for (const image of pending) {
    image.sent = true;
    markSent(image);
  }
  state.messages.push(user);
  if (answer) state.messages.push({ role: "assistant", content: answer });
  follow(() => drawBoxes(li, answer, stats));
}

function stop() {
  if (state.controller) state.controller.abort();
}

function newChat() {
  stop();
  state.messages = [];
  $("#messages").replaceChildren();
  for (const image of state.images) {
    image.sent = false;
    markSent(image);
  }
  say("A new chat: the images will be sent with the next message.");
}

// --- wiring -------------------------------------------------------------------------------------

function imageFiles(list) {
  return [...list].filter((f) => f.type.startsWith("image/") || /\.(heic|heif|avif)$/i.test(f.name));
}

function wire() {
  const drop = $("#drop");
  drop.addEventListener("dragover", (e) => {
    e.preventDefault();
    drop.classList.add("over");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    addFiles(imageFiles(e.dataTransfer.files));
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      $("#pick").click();
    }
  });
  $("#pick").addEventListener("change", (e) => {
    addFiles([...e.target.files]);
    e.target.value = "";
  });
  document.addEventListener("paste", (e) => {
    const files = imageFiles(e.clipboardData?.files || []);
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  $("#url-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const url = $("#url").value.trim();
    if (url) addURL(url).then(() => ($("#url").value = ""));
  });
  $("#key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    setApiKey($("#key").value.trim());
    loadModels().then(() => state.selected && select(state.selected));
  });
  $("#model").addEventListener("change", () => state.selected && select(state.selected));
  $("#detail").addEventListener("change", () => state.selected && select(state.selected));
  $("#image-max-tokens").addEventListener("change", () => state.selected && select(state.selected));
  $("#chat-form").addEventListener("submit", (e) => {
    e.preventDefault();
    send();
  });
  $("#prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      if (!state.controller) send();
    }
  });
  $("#stop").addEventListener("click", stop);
  document.addEventListener("keydown", (e) => e.key === "Escape" && stop());
  $("#new-chat").addEventListener("click", newChat);
}

readKeyFromFragment();
$("#key").value = apiKey();
wire();
loadModels();
