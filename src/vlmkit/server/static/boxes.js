// Bounding boxes and points in a model's answer, in the formats models are trained to write them,
// turned into fractions of the image (0..1) so they can be drawn on the original at any size.
//
// - Qwen2.5-VL: {"bbox_2d": [x1, y1, x2, y2], "label": ...} and {"point_2d": [x, y]}, in pixels of the
//   image as the model saw it (`seen`: the size the server reports in stats.image_sizes).
// - Gemini: {"box_2d": [ymin, xmin, ymax, xmax], "label": ...} and {"point": [y, x]}, on 0..1000.
// - <box> tags (Qwen-VL, InternVL, Kosmos-like): <ref>label</ref><box>(x1,y1),(x2,y2)</box> or
//   <box>[[x1, y1, x2, y2]]</box>, on 0..1000.
//
// Objects are found by a pattern rather than by parsing the answer as JSON, so a fenced block, a
// list cut short by the token limit, or prose around the JSON still gives the boxes it holds.

const OBJECT = /\{[^{}]*\}/g;
const KEYED = /"(bbox_2d|box_2d|point_2d|point)"\s*:\s*\[([^\]]*)\]/;
const LABEL = /"(?:label|name|text)"\s*:\s*"((?:[^"\\]|\\.)*)"/;
const TAG = /(?:<ref>([^<]*)<\/ref>\s*)?<box>([^<]*)<\/box>/g;

function numbers(text) {
  return (text.match(/-?\d+(?:\.\d+)?/g) || []).map(Number);
}

function clamp(v) {
  return Math.min(1, Math.max(0, v));
}

function box(x1, y1, x2, y2, label) {
  const [left, right] = x1 <= x2 ? [x1, x2] : [x2, x1];
  const [top, bottom] = y1 <= y2 ? [y1, y2] : [y2, y1];
  return { kind: "box", x: clamp(left), y: clamp(top), w: clamp(right) - clamp(left), h: clamp(bottom) - clamp(top), label };
}

function point(x, y, label) {
  return { kind: "point", x: clamp(x), y: clamp(y), label };
}

/**
 * The boxes and points in `text`, each {kind: "box"|"point", x, y, w?, h?, label} in fractions of the image.
 * `seen` ({width, height}) is the size the model saw, for formats in pixels; without it they are skipped.
 */
export function parseBoxes(text, seen) {
  const found = [];
  for (const match of text.matchAll(OBJECT)) {
    const keyed = KEYED.exec(match[0]);
    if (!keyed) continue;
    const labelMatch = LABEL.exec(match[0]);
    const label = labelMatch ? JSON.parse(`"${labelMatch[1]}"`) : "";
    const v = numbers(keyed[2]);
    const key = keyed[1];
    if (key === "box_2d" && v.length === 4) found.push(box(v[1] / 1000, v[0] / 1000, v[3] / 1000, v[2] / 1000, label));
    else if (key === "point" && v.length === 2) found.push(point(v[1] / 1000, v[0] / 1000, label));
    else if (key === "bbox_2d" && v.length === 4 && seen)
      found.push(box(v[0] / seen.width, v[1] / seen.height, v[2] / seen.width, v[3] / seen.height, label));
    else if (key === "point_2d" && v.length === 2 && seen) found.push(point(v[0] / seen.width, v[1] / seen.height, label));
  }
  for (const match of text.matchAll(TAG)) {
    const v = numbers(match[2]);
    const label = (match[1] || "").trim();
    for (let i = 0; i + 3 < v.length; i += 4) found.push(box(v[i] / 1000, v[i + 1] / 1000, v[i + 2] / 1000, v[i + 3] / 1000, label));
  }
  return found;
}

/** Shapes to lay over an image (a positioned parent of the same size): boxes and points, labelled. */
export function overlay(shapes) {
  const layer = document.createElement("div");
  layer.className = "boxes";
  layer.setAttribute("role", "list");
  layer.setAttribute("aria-label", `${shapes.length} region${shapes.length === 1 ? "" : "s"} found in the answer`);
  for (const s of shapes) {
    const shape = document.createElement("div");
    shape.className = s.kind;
    shape.setAttribute("role", "listitem");
    shape.style.left = `${s.x * 100}%`;
    shape.style.top = `${s.y * 100}%`;
    if (s.kind === "box") {
      shape.style.width = `${s.w * 100}%`;
      shape.style.height = `${s.h * 100}%`;
    }
    const label = document.createElement("span");
    label.textContent = s.label || s.kind;
    shape.append(label);
    layer.append(shape);
  }
  return layer;
}
