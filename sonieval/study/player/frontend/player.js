// A/B(/C…) player for Streamlit: one transport over several stimuli, switching at the same playhead.
//
// Plain JavaScript, no build step. The audio (playback, equal-power crossfade, loop with fades at
// its edges, the key map) lives in engine.js, which knows nothing of Streamlit and is reusable in
// any page. This file is the Streamlit side:
//   1. the Streamlit component protocol (v1), spoken by hand over postMessage;
//   2. the page: controls, keyboard shortcuts, listening-time accounting, reports to Python;
//   3. the rating panel of a multi-stimulus page (args.rating): every condition's button and
//      vertical slider(s) side by side under the transport, as in MUSHRA (ITU-R BS.1534) tools;
//   4. what survives a reload: the listening time (and marks) of the page, kept in the tab's
//      sessionStorage under the page and its sounds, and put back when the same page is shown again.
"use strict";

(function () {
  const AB = window.SonievalAB;

  // ---------------------------------------------------------------- 1. Streamlit protocol
  const Streamlit = {
    send(type, data) {
      window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
    },
    ready() { this.send("streamlit:componentReady", { apiVersion: 1 }); },
    setValue(value) { this.send("streamlit:setComponentValue", { value: value, dataType: "json" }); },
    setHeight(height) { this.send("streamlit:setFrameHeight", { height: height }); },
  };

  // ---------------------------------------------------------------- 2. The page
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), play: $("play"), stop: $("stop"), time: $("time"), seek: $("seek"),
    stimuli: $("stimuli"), loop: $("loop"), loopStart: $("loop-start"), loopEnd: $("loop-end"),
    hereStart: $("loop-here-start"), hereEnd: $("loop-here-end"), countdown: $("countdown"), help: $("help"),
    zoom: $("zoom"), zoomImg: $("zoom-img"),
  };
  const round3 = (x) => Math.round(x * 1000) / 1000;

  let ctx = null;
  let engine = null;
  let args = null;
  let signature = null;
  let labels = [];
  let required = [];
  let keys = [];
  let listened = [];
  let marks = {}; // rating panel: label -> {attribute: mark or null}
  let lastAccrue = 0;
  let seq = 0;
  let lastReport = 0;
  let lastSaved = 0;
  let minMet = false;
  let error = null;
  let nSwitches = 0;
  let lastSwitch = null;
  let seeking = false;
  let generation = 0;

  function remaining() {
    const min = args ? args.min_listen_s : 0;
    let left = 0;
    labels.forEach((_, i) => { if (required[i]) left += Math.max(0, min - listened[i]); });
    return left;
  }

  // Listening time is audio-clock time during which the transport played with stimulus i chosen.
  function accrue() {
    if (!engine) return;
    const now = ctx.currentTime;
    if (engine.playing) {
      const from = Math.max(lastAccrue, engine.segCtx);
      // without a loop the sound ends at the end of the stimuli, even if the tick notices it later
      const end = engine.loop.on ? Infinity : engine.segCtx + (engine.duration - engine.segPos);
      const until = Math.min(now, end);
      if (until > from) listened[engine.selected] += until - from;
    }
    lastAccrue = now;
  }

  function state(event, count) {
    const listenedMap = {};
    labels.forEach((l, i) => { listenedMap[l] = round3(listened[i]); });
    const left = remaining();
    return {
      v: 1, seq: count === false ? seq : ++seq, event: event, ready: !!engine, error: error,
      page: args && args.page !== undefined ? args.page : null,
      playing: !!(engine && engine.playing),
      selected: engine ? labels[engine.selected] : (labels[0] || null),
      selected_index: engine ? engine.selected : 0,
      position_s: engine ? round3(engine.position()) : 0,
      duration_s: engine ? round3(engine.duration) : 0,
      listened_s: listenedMap,
      marks: args && args.rating ? JSON.parse(JSON.stringify(marks)) : {},
      min_listen_s: args ? args.min_listen_s : 0,
      remaining_s: round3(left),
      min_listen_met: left <= 0,
      loop: engine ? { enabled: engine.loop.on, start_s: round3(engine.loop.start), end_s: round3(engine.loop.end) }
        : { enabled: false, start_s: 0, end_s: 0 },
      switch_mode: args ? args.switch_mode : null,
      n_switches: nSwitches,
      last_switch: lastSwitch,
      context_time: ctx ? round3(ctx.currentTime) : 0,
      sample_rate: ctx ? ctx.sampleRate : 0,
    };
  }

  // ---------------------------------------------------------------- 4. kept across a reload
  // The key names the page and its sounds (URLs name files by their bytes), so another page, or
  // another rater's page in the same tab, never reads it.
  function storageKey() {
    if (!args || args.page === undefined || args.page === null) return null;
    return "sonieval.ab:" + args.page + ":" + args.stimuli.map((s) => s.url).join("|");
  }

  function save() {
    const key = storageKey();
    if (!key) return;
    try {
      const heard = {};
      labels.forEach((l, i) => { heard[l] = listened[i]; });
      sessionStorage.setItem(key, JSON.stringify({ listened_s: heard, marks: marks, n_switches: nSwitches }));
    } catch (e) { /* storage full or blocked: nothing is kept, nothing breaks */ }
  }

  function restore() {
    const key = storageKey();
    let kept = null;
    try { kept = key ? JSON.parse(sessionStorage.getItem(key) || "null") : null; } catch (e) { kept = null; }
    if (!kept) return;
    labels.forEach((l, i) => {
      const v = Number(kept.listened_s && kept.listened_s[l]);
      if (isFinite(v) && v > listened[i]) listened[i] = v;
    });
    nSwitches = Number(kept.n_switches) || 0;
    if (args.rating && kept.marks) {
      for (const label of Object.keys(marks)) {
        for (const a of Object.keys(marks[label])) {
          const v = kept.marks[label] && kept.marks[label][a];
          if (Number.isInteger(v)) marks[label][a] = v;
        }
      }
    }
  }

  function report(event) {
    accrue();
    lastReport = ctx ? ctx.currentTime : 0;
    const value = state(event);
    window.abPlayer.last = value;
    save();
    Streamlit.setValue(value);
  }

  function fmt(s) { return s.toFixed(2); }

  function render() {
    if (!engine) return;
    const pos = engine.position();
    ui.time.textContent = fmt(pos) + " / " + fmt(engine.duration) + " s";
    if (!seeking) {
      ui.seek.value = pos;
      ui.seek.setAttribute("aria-valuetext", fmt(pos) + " seconds");
    }
    ui.play.textContent = engine.playing ? "Pause" : "Play";
    ui.play.setAttribute("aria-label", engine.playing ? "Pause" : "Play");
    labels.forEach((_, i) => {
      const b = $("stimulus-" + i);
      b.setAttribute("aria-pressed", String(i === engine.selected));
      const left = b.querySelector(".left");
      if (args.min_listen_s > 0 && required[i]) {
        const l = Math.max(0, args.min_listen_s - listened[i]);
        left.textContent = l > 0 ? Math.ceil(l) + " s to go" : "listened";
      }
    });
    if (args.min_listen_s > 0) {
      const left = remaining();
      ui.countdown.hidden = false;
      ui.countdown.textContent = left > 0
        ? "Minimum listening time: " + Math.ceil(left) + " s left"
        : "Minimum listening time: 0 s left (reached)";
      ui.countdown.classList.toggle("met", left <= 0);
    }
  }

  function tick() {
    if (!engine) return;
    accrue();
    engine.maintain();
    const ended = engine.checkEnded();
    render();
    if (ended) { report("ended"); return; }
    if (!minMet && args.min_listen_s > 0 && remaining() <= 0) {
      minMet = true;
      ui.status.textContent = "Minimum listening time reached.";
      report("min_reached");
      return;
    }
    if (engine.playing && args.report_every_s > 0 && ctx.currentTime - lastReport >= args.report_every_s) report("progress");
    else if (engine.playing && ctx.currentTime - lastSaved >= 0.5) { lastSaved = ctx.currentTime; save(); }
  }

  async function ensureRunning() {
    if (ctx.state !== "running") await ctx.resume();
  }

  async function togglePlay() {
    if (!engine) return;
    await ensureRunning();
    accrue();
    if (engine.playing) engine.pause(); else engine.play();
    lastAccrue = ctx.currentTime;
    render();
    report(engine.playing ? "play" : "pause");
  }

  async function stop() {
    if (!engine) return;
    accrue();
    engine.pause();
    engine.seek(engine.loop.on ? engine.loop.start : 0);
    render();
    report("stop");
  }

  function select(i) {
    if (!engine || i < 0 || i >= labels.length || i === engine.selected) return;
    accrue();
    const from = engine.selected;
    const pos = engine.position();
    const audibleAt = engine.select(i);
    nSwitches += 1;
    lastSwitch = {
      from: labels[from], to: labels[i], position_s: round3(pos), context_time: round3(ctx.currentTime),
      audible_at: round3(audibleAt), playing: engine.playing,
    };
    render();
    report("select");
  }

  function seekTo(pos) {
    if (!engine) return;
    accrue();
    engine.seek(pos);
    render();
    report("seek");
  }

  function loopBounds() {
    let start = parseFloat(ui.loopStart.value);
    let end = parseFloat(ui.loopEnd.value);
    if (!isFinite(start)) start = 0;
    if (!isFinite(end)) end = engine.duration;
    start = Math.max(0, Math.min(start, engine.duration - AB.MIN_LOOP_S));
    end = Math.max(start + AB.MIN_LOOP_S, Math.min(end, engine.duration));
    return [start, end];
  }

  function applyLoop(on, event) {
    if (!engine) return;
    accrue();
    const [start, end] = loopBounds();
    ui.loopStart.value = round3(start);
    ui.loopEnd.value = round3(end);
    ui.loop.checked = on;
    engine.setLoop(on, start, end);
    render();
    report(event);
  }

  function setLoopEdgeHere(which) {
    if (!engine) return;
    const pos = round3(engine.position());
    if (which === "start") ui.loopStart.value = pos; else ui.loopEnd.value = pos;
    applyLoop(ui.loop.checked, "loop");
  }

  function stimulusButton(label, i) {
    const b = document.createElement("button");
    b.type = "button";
    b.id = "stimulus-" + i;
    b.setAttribute("aria-pressed", String(i === 0));
    const hint = AB.keyHint(keys[i]);
    b.setAttribute("aria-keyshortcuts", [keys[i].digit, keys[i].letter && keys[i].letter.toUpperCase()].filter(Boolean).join(" "));
    b.setAttribute("aria-label", label + (hint ? " (key " + hint + ")" : ""));
    b.disabled = true;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = label;
    const key = document.createElement("span");
    key.className = "key";
    key.setAttribute("aria-hidden", "true");
    key.textContent = hint ? "key " + hint : "";
    const left = document.createElement("span");
    left.className = "left";
    left.setAttribute("aria-hidden", "true");
    b.append(name, key, left);
    b.addEventListener("click", () => select(i));
    return b;
  }

  function buildButtons() {
    ui.stimuli.textContent = "";
    document.body.classList.toggle("rating", !!args.rating);
    if (args.rating) { buildPanel(); return; }
    labels.forEach((label, i) => ui.stimuli.appendChild(stimulusButton(label, i)));
  }

  // ---------------------------------------------------------------- 3. The rating panel
  function markText(v) { return v === null || v === undefined ? "–" : String(v); }

  function setMark(label, attr, slider) {
    const v = Math.round(Number(slider.value));
    marks[label][attr] = v;
    slider.classList.remove("unset");
    slider.setAttribute("aria-valuetext", String(v));
    $("value-" + slider.dataset.id).textContent = markText(v);
    report("mark");
  }

  function scaleColumn(rating) {
    const col = document.createElement("div");
    col.className = "scale";
    col.setAttribute("aria-hidden", "true");
    const top = document.createElement("span");
    top.className = "end top";
    top.textContent = rating.scale_max + " " + (rating.high || "");
    const bottom = document.createElement("span");
    bottom.className = "end bottom";
    bottom.textContent = rating.scale_min + " " + (rating.low || "");
    col.append(top, bottom);
    return col;
  }

  function markSlider(label, attr, rating, id) {
    const wrap = document.createElement("div");
    wrap.className = "mark-wrap";
    const value = document.createElement("span");
    value.className = "value";
    value.id = "value-" + id;
    value.setAttribute("aria-hidden", "true");
    value.textContent = markText(marks[label][attr.id]);
    const slider = document.createElement("input");
    slider.type = "range";
    slider.className = "mark" + (marks[label][attr.id] === null ? " unset" : "");
    slider.id = "mark-" + id;
    slider.dataset.id = id;
    slider.min = rating.scale_min;
    slider.max = rating.scale_max;
    slider.step = 1;
    slider.value = marks[label][attr.id] === null ? rating.scale_min : marks[label][attr.id];
    slider.disabled = true;
    slider.setAttribute("aria-label", label + ": " + attr.label);
    slider.setAttribute("aria-valuetext", marks[label][attr.id] === null ? "not rated yet" : String(slider.value));
    slider.addEventListener("input", () => setMark(label, attr.id, slider));
    // Home at the bottom, or a click on the thumb where it lies, changes nothing: still a mark.
    slider.addEventListener("keydown", (e) => {
      if (["Home", "End", "ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "PageUp", "PageDown"].includes(e.key)) {
        setTimeout(() => setMark(label, attr.id, slider), 0);
      }
    });
    slider.addEventListener("pointerup", () => setMark(label, attr.id, slider));
    const name = document.createElement("span");
    name.className = "attr";
    name.setAttribute("aria-hidden", "true");
    name.textContent = attr.short || attr.label;
    wrap.append(value, slider, name);
    return wrap;
  }

  function buildPanel() {
    const rating = args.rating;
    ui.stimuli.appendChild(scaleColumn(rating));
    labels.forEach((label, i) => {
      const col = document.createElement("div");
      col.className = "condition";
      col.id = "condition-" + i;
      col.appendChild(stimulusButton(label, i));
      const s = args.stimuli[i];
      if (s.image) {
        const img = document.createElement("img");
        img.className = "thumb";
        img.src = s.image;
        img.alt = "Waveforms of R (top) and " + label + " (bottom); click to enlarge";
        img.tabIndex = 0;
        const open = () => { ui.zoomImg.src = s.image; ui.zoomImg.alt = img.alt; ui.zoom.hidden = false; ui.zoom.focus(); };
        img.addEventListener("click", open);
        img.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); open(); } });
        col.appendChild(img);
      }
      if (marks[label]) {
        const row = document.createElement("div");
        row.className = "marks";
        rating.attributes.forEach((attr, k) => row.appendChild(markSlider(label, attr, rating, i + "-" + k)));
        col.appendChild(row);
      }
      ui.stimuli.appendChild(col);
    });
  }

  // ---------------------------------------------------------------- decoding, prefetch
  // Decoded sounds by URL: this page's and the next page's (args.prefetch), fetched once. A URL
  // names its file by a hash of the bytes, so a cached buffer is the file the page asks for.
  const decoded = new Map();

  async function fetchDecode(url) {
    const response = await fetch(url, { credentials: "same-origin" });
    if (!response.ok) throw new Error("could not load " + url + " (HTTP " + response.status + ")");
    const data = await response.arrayBuffer();
    try {
      return await ctx.decodeAudioData(data);
    } catch (e) {
      throw new Error("could not decode " + url + " (" + (e && e.message ? e.message : e) + ")");
    }
  }

  function decode(url) {
    if (!decoded.has(url)) {
      const pending = fetchDecode(url);
      pending.catch(() => decoded.delete(url)); // a failure is retried by the next page that asks
      decoded.set(url, pending);
    }
    return decoded.get(url);
  }

  async function decodeAll(urls) {
    return Promise.all(urls.map(decode));
  }

  // Keep what this page and the next need; start decoding the next page's sounds (background).
  function prefetch(urls) {
    const keep = new Set(args.stimuli.map((s) => s.url).concat(urls || []));
    for (const url of Array.from(decoded.keys())) if (!keep.has(url)) decoded.delete(url);
    for (const url of urls || []) decode(url).catch(() => {});
    window.abPlayer.prefetched = (urls || []).slice();
  }

  function setEnabled(on) {
    [ui.play, ui.stop, ui.seek, ui.loop, ui.loopStart, ui.loopEnd, ui.hereStart, ui.hereEnd]
      .forEach((el) => { el.disabled = !on; });
    ui.stimuli.querySelectorAll("button, input.mark").forEach((el) => { el.disabled = !on; });
  }

  function emptyMarks() {
    const out = {};
    if (!args.rating) return out;
    args.stimuli.forEach((s) => {
      if (s.reference) return;
      out[s.label] = {};
      args.rating.attributes.forEach((a) => { out[s.label][a.id] = null; });
    });
    return out;
  }

  async function init(newArgs) {
    const gen = ++generation;
    if (engine) engine.dispose();
    engine = null;
    window.abPlayer.engine = null;
    window.abPlayer.output = null;
    window.abPlayer.last = null;
    args = newArgs;
    labels = args.stimuli.map((s) => s.label);
    required = args.stimuli.map((s) => s.required !== false);
    keys = AB.keyMap(labels, args.stimuli.findIndex((s) => s.reference));
    const initial = args.initial_listened_s || {};
    listened = labels.map((l) => Math.max(0, Number(initial[l]) || 0));
    marks = emptyMarks();
    error = null;
    nSwitches = 0;
    lastSwitch = null;
    restore();
    minMet = args.min_listen_s > 0 && remaining() <= 0;
    buildButtons();
    setEnabled(false);
    ui.status.classList.remove("error");
    ui.status.textContent = "Loading audio…";
    if (!ctx) ctx = new AudioContext({ latencyHint: "interactive" });
    let buffers;
    try {
      buffers = await decodeAll(args.stimuli.map((s) => s.url));
    } catch (e) {
      if (gen !== generation) return;
      error = String(e && e.message ? e.message : e);
      ui.status.classList.add("error");
      ui.status.textContent = "The audio could not be loaded: " + error;
      report("error");
      return;
    }
    if (gen !== generation) return;
    engine = new AB.Engine(ctx, buffers, { mode: args.switch_mode, fadeS: args.crossfade_ms / 1000 });
    window.abPlayer.engine = engine;
    window.abPlayer.output = engine.output;
    ui.seek.max = engine.duration;
    ui.seek.step = 0.01;
    const region = args.loop_region;
    ui.loopStart.max = ui.loopEnd.max = engine.duration;
    ui.loopStart.value = region ? region[0] : 0;
    ui.loopEnd.value = round3(region ? region[1] : engine.duration);
    const [start, end] = loopBounds();
    engine.loop = { on: false, start: start, end: end };
    setEnabled(true);
    ui.status.textContent = "Ready: " + labels.length + " sounds, " + fmt(engine.duration) + " s.";
    lastAccrue = ctx.currentTime;
    render();
    report("ready");
    Streamlit.setHeight(document.documentElement.scrollHeight);
    prefetch(args.prefetch);
  }

  function applyTheme(theme) {
    if (!theme) return;
    const root = document.documentElement.style;
    if (theme.primaryColor) root.setProperty("--primary", theme.primaryColor);
    if (theme.backgroundColor) root.setProperty("--bg", theme.backgroundColor);
    if (theme.secondaryBackgroundColor) root.setProperty("--bg2", theme.secondaryBackgroundColor);
    if (theme.textColor) root.setProperty("--text", theme.textColor);
    if (theme.font) root.setProperty("--font", theme.font);
  }

  function onRender(data) {
    applyTheme(data.theme);
    const a = data.args || {};
    // A rerun sends the same arguments again: keep playing. New stimuli: start afresh.
    const sig = JSON.stringify([a.stimuli, a.switch_mode, a.crossfade_ms, a.min_listen_s, a.loop_region, a.page, a.rating]);
    if (sig === signature) {
      if (engine) prefetch(a.prefetch);
      return;
    }
    signature = sig;
    init(a);
  }

  // ---------------------------------------------------------------- wiring
  ui.play.addEventListener("click", togglePlay);
  ui.stop.addEventListener("click", stop);
  ui.seek.addEventListener("input", () => { seeking = true; });
  ui.seek.addEventListener("change", () => { seeking = false; seekTo(parseFloat(ui.seek.value)); });
  ui.loop.addEventListener("change", () => applyLoop(ui.loop.checked, "loop"));
  ui.loopStart.addEventListener("change", () => applyLoop(ui.loop.checked, "loop"));
  ui.loopEnd.addEventListener("change", () => applyLoop(ui.loop.checked, "loop"));
  ui.hereStart.addEventListener("click", () => setLoopEdgeHere("start"));
  ui.hereEnd.addEventListener("click", () => setLoopEdgeHere("end"));
  const closeZoom = () => { ui.zoom.hidden = true; };
  ui.zoom.addEventListener("click", closeZoom);

  function onKey(e) {
    if (!ui.zoom.hidden && (e.key === "Escape" || e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      closeZoom();
      return;
    }
    const act = AB.keyAction(e, keys);
    if (!act) return;
    if (act.type === "toggle") togglePlay();
    else if (act.type === "select") select(act.index);
    else if (act.type === "loop") { if (engine) applyLoop(!engine.loop.on, "loop"); }
    else if (act.type === "stop") stop();
    else if (act.type === "loopStart") setLoopEdgeHere("start");
    else if (act.type === "loopEnd") setLoopEdgeHere("end");
    else if (act.type === "seek") {
      if (e.target === ui.seek) return; // the position slider moves itself
      if (engine) seekTo(engine.position() + act.delta);
    }
    // Prevent the focused button from also acting on Space (it would toggle twice).
    e.preventDefault();
  }
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", (e) => {
    const t = e.target;
    const typing = t && t.tagName === "INPUT" && (t.type === "number" || t.type === "text");
    if ((e.key === " " || e.key === "Spacebar") && !typing) e.preventDefault();
  });

  // generation counts the pages (argument sets) this frame has shown; engine is null until the
  // current one's sounds are decoded. A test waiting for the next page in a kept frame reads both.
  window.abPlayer = { get ctx() { return ctx; }, get args() { return args; }, get generation() { return generation; },
    engine: null, output: null, last: null, state: () => state("peek", false), keys: () => keys };
  window.addEventListener("message", (ev) => {
    if (ev.source !== window.parent || !ev.data || ev.data.type !== "streamlit:render") return;
    onRender(ev.data);
  });
  new ResizeObserver(() => Streamlit.setHeight(document.documentElement.scrollHeight)).observe(document.body);
  setInterval(tick, 50);
  Streamlit.ready();
})();
