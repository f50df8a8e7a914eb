// The assisted-drawing page: pointer strokes on a canvas, sent to POST /api/analyze after
// each stroke; the answer colours the strokes and lists the top classes and suggestions.
"use strict";

const COLOURS = {helps: "#1a9850", hurts: "#d73027", noise: "#8c8c8c", pending: "#222222"};
const SUGGESTION_COLOURS = ["#3366cc", "#9933cc", "#ff8800", "#00a0a0", "#cc3399"];
const SIZE = 480;  // canvas side in CSS pixels: the strokes' units

const canvas = document.getElementById("canvas");
const context = canvas.getContext("2d");
const state = {
  strokes: [],      // [[x, y], ...] per stroke
  labels: [],       // "helps" | "hurts" | "noise" | null (not analysed yet) per stroke
  suggestions: [],  // {points, gain, probability}
  target: null,     // null = the top class
  seed: 0,
  current: null,    // the stroke being drawn
  sent: 0,          // requests sent; only the latest answer is shown
  answered: 0,
};

function setUpCanvas() {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = SIZE * ratio;
  canvas.height = SIZE * ratio;
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
}

function drawPolyline(points, colour, dashed) {
  context.strokeStyle = colour;
  context.fillStyle = colour;
  context.lineWidth = 4;
  context.lineCap = "round";
  context.lineJoin = "round";
  context.setLineDash(dashed ? [8, 6] : []);
  if (points.length === 1) {
    context.beginPath();
    context.arc(points[0][0], points[0][1], 2.5, 0, 2 * Math.PI);
    context.fill();
    return;
  }
  context.beginPath();
  context.moveTo(points[0][0], points[0][1]);
  for (const [x, y] of points.slice(1)) context.lineTo(x, y);
  context.stroke();
}

function redraw() {
  context.clearRect(0, 0, SIZE, SIZE);
  state.suggestions.forEach((s, i) =>
    drawPolyline(s.points, SUGGESTION_COLOURS[i % SUGGESTION_COLOURS.length], true));
  state.strokes.forEach((points, k) => drawPolyline(points, COLOURS[state.labels[k] || "pending"]));
  if (state.current) drawPolyline(state.current, COLOURS.pending);
}

function item(text, className) {
  const li = document.createElement("li");
  li.textContent = text;
  if (className) li.className = className;
  return li;
}

function showStatus(text, isError) {
  const status = document.getElementById("status");
  status.textContent = text;
  status.className = isError ? "error" : "";
}

function showAnswer(answer) {
  const classes = document.getElementById("classes");
  classes.replaceChildren(...answer.classes.map((c) => {
    const li = item(`${c.name} ${(100 * c.probability).toFixed(1)}%`,
                    c.name === answer.target ? "target" : "");
    li.dataset.name = c.name;
    li.title = "explain and help this class";
    li.addEventListener("click", () => setTarget(c.name));
    return li;
  }));
  document.getElementById("target-name").textContent =
      `${answer.target} (${(100 * answer.target_probability).toFixed(1)}%)`;
  state.labels = answer.strokes.map((s) => s.label);
  document.getElementById("strokes").replaceChildren(...answer.strokes.map((s, k) => {
    const li = item(`stroke ${k + 1}: ${s.label} (${s.attribution >= 0 ? "+" : ""}` +
                    `${s.attribution.toFixed(2)})`, s.label);
    li.dataset.label = s.label;
    return li;
  }));
  document.getElementById("generator").textContent = `(sketch-rnn ${answer.generator})`;
  state.suggestions = answer.suggestions;
  showSuggestions();
  showStatus(`answered in ${Math.round(answer.timing_ms.total)} ms`);
}

function showSuggestions() {
  const list = document.getElementById("suggestions");
  list.replaceChildren(...state.suggestions.map((s, i) => {
    const gain = `${s.gain >= 0 ? "+" : ""}${(100 * s.gain).toFixed(1)}`;
    const li = item(`target ${gain} points (to ${(100 * s.probability).toFixed(1)}%)`);
    li.className = "suggestion";
    li.style.color = SUGGESTION_COLOURS[i % SUGGESTION_COLOURS.length];
    for (const [label, action] of [["accept", accept], ["dismiss", dismiss]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = label;
      button.className = label;
      button.addEventListener("click", () => action(i));
      li.append(button);
    }
    return li;
  }));
  redraw();
}

async function analyze() {
  const id = ++state.sent;
  if (!state.strokes.length) {
    state.suggestions = [];
    for (const list of ["classes", "strokes", "suggestions"]) {
      document.getElementById(list).replaceChildren();
    }
    redraw();
    return;
  }
  showStatus("analysing...");
  const body = {strokes: state.strokes, target: state.target, seed: state.seed};
  try {
    const response = await fetch("/api/analyze", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
    const answer = await response.json();
    if (id !== state.sent) return;  // a newer request is on its way
    if (!response.ok) {
      showStatus(`the server refused the drawing: ${answer.error}`, true);
      return;
    }
    showAnswer(answer);
  } catch (error) {
    if (id === state.sent) showStatus(`no answer from the server: ${error}`, true);
  } finally {
    if (id === state.sent) document.body.dataset.answered = String(++state.answered);
  }
}

function addStroke(points) {
  state.strokes.push(points);
  state.labels.push(null);
  state.suggestions = [];
  showSuggestions();
  analyze();
}

function accept(i) {
  addStroke(state.suggestions[i].points.map(([x, y]) => [x, y]));
}

function dismiss(i) {
  state.suggestions.splice(i, 1);
  showSuggestions();
}

function setTarget(name) {
  state.target = name || null;
  document.getElementById("target").value = name || "";
  analyze();
}

function point(event) {
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * SIZE / box.width;
  const y = (event.clientY - box.top) * SIZE / box.height;
  return [Math.round(x * 10) / 10, Math.round(y * 10) / 10];
}

canvas.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  canvas.setPointerCapture(event.pointerId);
  state.current = [point(event)];
  redraw();
});

canvas.addEventListener("pointermove", (event) => {
  if (!state.current) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const e of events.length ? events : [event]) state.current.push(point(e));
  redraw();
});

function endStroke() {
  if (!state.current) return;
  const points = state.current;
  state.current = null;
  addStroke(points);
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

document.getElementById("undo").addEventListener("click", () => {
  state.strokes.pop();
  state.labels.pop();
  analyze();
});
document.getElementById("clear").addEventListener("click", () => {
  state.strokes = [];
  state.labels = [];
  analyze();
});
document.getElementById("reroll").addEventListener("click", () => {
  state.seed += 1;
  analyze();
});
document.getElementById("target").addEventListener("change", (e) => setTarget(e.target.value));

async function loadClasses() {
  const answer = await (await fetch("/api/classes")).json();
  const select = document.getElementById("target");
  for (const name of [...answer.classes].sort()) {
    const option = document.createElement("option");
    option.value = name;
    option.textContent = answer.generators.includes(name) ? `${name} (sketch-rnn)` : name;
    select.append(option);
  }
}

setUpCanvas();
redraw();
loadClasses();
