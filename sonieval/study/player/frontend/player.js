// A/B(/C…) player for Streamlit: one transport over several stimuli, switching at the same playhead.
//
// Plain JavaScript, no build step. Three parts:
//   1. the Streamlit component protocol (v1), spoken by hand over postMessage;
//   2. Engine: Web Audio playback (every stimulus decoded up front into an AudioBuffer);
//   3. the page: controls, keyboard shortcuts, listening-time accounting, reports to Python.
//
// Switching keeps the playhead because every position is computed from the audio clock
// (AudioContext.currentTime), never from timers:
//   - "crossfade" (default): all sources start together at one scheduled time and offset; each
//     goes through its own gain node; switching ramps the old gain to 0 and the new one to 1
//     over a few milliseconds. The sources cannot drift apart: they share the sample clock.
//   - "restart": only the chosen source plays; switching starts the new source at the position
//     the transport will have at a scheduled time a few milliseconds ahead, and fades the old
//     one out from that time.
"use strict";

(function () {
  // ---------------------------------------------------------------- 1. Streamlit protocol
  const Streamlit = {
    send(type, data) {
      window.parent.postMessage(Object.assign({ isStreamlitMessage: true, type: type }, data), "*");
    },
    ready() { this.send("streamlit:componentReady", { apiVersion: 1 }); },
    setValue(value) { this.send("streamlit:setComponentValue", { value: value, dataType: "json" }); },
    setHeight(height) { this.send("streamlit:setFrameHeight", { height: height }); },
  };

  // ---------------------------------------------------------------- 2. Engine
  const LOOKAHEAD_S = 0.02; // schedule starts slightly ahead so every source starts on the same frame
  const MIN_LOOP_S = 0.05;

  class Engine {
    constructor(ctx, buffers, mode, fadeS) {
      this.ctx = ctx;
      this.buffers = buffers;
      this.mode = mode;
      this.fadeS = fadeS;
      this.duration = Math.max.apply(null, buffers.map((b) => b.duration));
      this.output = ctx.createGain(); // master: fades on start/stop; a test may tap it
      this.output.connect(ctx.destination);
      this.gains = buffers.map(() => {
        const g = ctx.createGain();
        g.gain.value = 0;
        g.connect(this.output);
        return g;
      });
      this.sources = [];
      this.playing = false;
      this.selected = 0;
      this.segCtx = 0; // audio-clock time at which the current segment starts
      this.segPos = 0; // transport position at segCtx
      this.loop = { on: false, start: 0, end: this.duration };
    }

    positionAt(t) {
      if (!this.playing) return this.segPos;
      const raw = this.segPos + Math.max(0, t - this.segCtx);
      if (this.loop.on && raw >= this.loop.end) {
        const len = this.loop.end - this.loop.start;
        return this.loop.start + ((raw - this.loop.start) % len);
      }
      return Math.min(raw, this.duration);
    }

    position() { return this.positionAt(this.ctx.currentTime); }

    inLoop(pos) { return pos >= this.loop.start && pos < this.loop.end; }

    _startSources(pos) {
      const when = this.ctx.currentTime + LOOKAHEAD_S;
      this.segCtx = when;
      this.segPos = pos;
      const chosen = this.mode === "crossfade" ? this.buffers.map((_, i) => i) : [this.selected];
      this.sources = [];
      for (const i of chosen) this.sources[i] = this._source(i, when, pos);
      this.gains.forEach((g, i) => {
        g.gain.cancelScheduledValues(0);
        g.gain.setValueAtTime(i === this.selected ? 1 : 0, when);
      });
      const m = this.output.gain;
      m.cancelScheduledValues(0);
      m.setValueAtTime(0, when);
      m.linearRampToValueAtTime(1, when + this.fadeS);
    }

    _source(i, when, offset) {
      const src = this.ctx.createBufferSource();
      src.buffer = this.buffers[i];
      if (this.loop.on) {
        src.loop = true;
        src.loopStart = this.loop.start;
        src.loopEnd = this.loop.end;
      }
      src.connect(this.gains[i]);
      src.start(when, Math.min(offset, this.buffers[i].duration));
      return src;
    }

    _stopSources() {
      const t = this.ctx.currentTime;
      const m = this.output.gain;
      m.cancelScheduledValues(0);
      m.setValueAtTime(1, t);
      m.linearRampToValueAtTime(0, t + this.fadeS);
      for (const src of this.sources) if (src) src.stop(t + this.fadeS + 0.005);
      this.sources = [];
    }

    play() {
      if (this.playing) return;
      let pos = this.segPos;
      if (this.loop.on && !this.inLoop(pos)) pos = this.loop.start;
      if (!this.loop.on && pos >= this.duration) pos = 0;
      this._startSources(pos);
      this.playing = true;
    }

    pause() {
      if (!this.playing) return;
      const pos = this.position();
      this._stopSources();
      this.playing = false;
      this.segPos = pos;
    }

    seek(pos) {
      pos = Math.max(0, Math.min(pos, this.duration));
      if (this.loop.on && !this.inLoop(pos)) pos = this.loop.start;
      if (this.playing) {
        this._stopSources();
        this._startSources(pos);
      } else {
        this.segPos = pos;
      }
    }

    // Returns the audio-clock time from which the new stimulus is heard.
    select(i) {
      const old = this.selected;
      if (i === old) return this.ctx.currentTime;
      this.selected = i;
      if (!this.playing) return this.ctx.currentTime;
      if (this.mode === "crossfade") {
        const t = this.ctx.currentTime;
        this._fade(this.gains[old].gain, 1, 0, t);
        this._fade(this.gains[i].gain, 0, 1, t);
        return t;
      }
      const when = this.ctx.currentTime + LOOKAHEAD_S;
      const oldSrc = this.sources[old];
      this.sources[old] = undefined;
      this.sources[i] = this._source(i, when, this.positionAt(when));
      this._fade(this.gains[old].gain, 1, 0, when);
      this._fade(this.gains[i].gain, 0, 1, when);
      if (oldSrc) oldSrc.stop(when + this.fadeS + 0.005);
      return when;
    }

    _fade(param, from, to, t) {
      param.cancelScheduledValues(0);
      param.setValueAtTime(from, t);
      param.linearRampToValueAtTime(to, t + this.fadeS);
    }

    setLoop(on, start, end) {
      const pos = this.position();
      this.loop = { on: on, start: start, end: end };
      if (this.playing) {
        this._stopSources();
        this._startSources(on && !this.inLoop(pos) ? start : pos);
      } else if (on && !this.inLoop(this.segPos)) {
        this.segPos = start;
      }
    }

    // Without a loop the transport stops at the end; returns true when it just did.
    checkEnded() {
      if (!this.playing || this.loop.on) return false;
      if (this.segPos + (this.ctx.currentTime - this.segCtx) < this.duration) return false;
      this._stopSources();
      this.playing = false;
      this.segPos = 0;
      return true;
    }
  }

  // ---------------------------------------------------------------- 3. The page
  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), play: $("play"), stop: $("stop"), time: $("time"), seek: $("seek"),
    stimuli: $("stimuli"), loop: $("loop"), loopStart: $("loop-start"), loopEnd: $("loop-end"),
    hereStart: $("loop-here-start"), hereEnd: $("loop-here-end"), countdown: $("countdown"),
  };
  const round3 = (x) => Math.round(x * 1000) / 1000;

  let ctx = null;
  let engine = null;
  let args = null;
  let signature = null;
  let labels = [];
  let required = [];
  let listened = [];
  let lastAccrue = 0;
  let seq = 0;
  let lastReport = 0;
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

  function report(event) {
    accrue();
    lastReport = ctx ? ctx.currentTime : 0;
    const value = state(event);
    window.abPlayer.last = value;
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
    Array.from(ui.stimuli.children).forEach((b, i) => {
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
    start = Math.max(0, Math.min(start, engine.duration - MIN_LOOP_S));
    end = Math.max(start + MIN_LOOP_S, Math.min(end, engine.duration));
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

  function buildButtons() {
    ui.stimuli.textContent = "";
    labels.forEach((label, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.id = "stimulus-" + i;
      b.setAttribute("aria-pressed", String(i === 0));
      const keys = i < 9 ? [String(i + 1)] : [];
      if (/^[A-Za-z]$/.test(label)) keys.push(label.toUpperCase());
      b.setAttribute("aria-keyshortcuts", keys.join(" "));
      b.setAttribute("aria-label", label + (i < 9 ? " (key " + (i + 1) + ")" : ""));
      b.disabled = true;
      const key = document.createElement("span");
      key.className = "key";
      key.setAttribute("aria-hidden", "true");
      key.textContent = i < 9 ? String(i + 1) : "";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = label;
      const left = document.createElement("span");
      left.className = "left";
      left.setAttribute("aria-hidden", "true");
      b.append(key, name, left);
      b.addEventListener("click", () => select(i));
      ui.stimuli.appendChild(b);
    });
  }

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
    Array.from(ui.stimuli.children).forEach((b) => { b.disabled = !on; });
  }

  async function init(newArgs) {
    const gen = ++generation;
    if (engine) { engine.pause(); engine.output.disconnect(); }
    engine = null;
    window.abPlayer.engine = null;
    window.abPlayer.output = null;
    window.abPlayer.last = null;
    args = newArgs;
    labels = args.stimuli.map((s) => s.label);
    required = args.stimuli.map((s) => s.required !== false);
    const initial = args.initial_listened_s || {};
    listened = labels.map((l) => Math.max(0, Number(initial[l]) || 0));
    minMet = args.min_listen_s > 0 && remaining() <= 0;
    error = null;
    nSwitches = 0;
    lastSwitch = null;
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
    engine = new Engine(ctx, buffers, args.switch_mode, args.crossfade_ms / 1000);
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
    const sig = JSON.stringify([a.stimuli, a.switch_mode, a.crossfade_ms, a.min_listen_s, a.loop_region, a.page]);
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

  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    const typing = t && t.tagName === "INPUT" && (t.type === "number" || t.type === "text");
    if (typing) return; // digits typed into the loop fields are numbers, not shortcuts
    const k = e.key;
    let handled = true;
    if (k === " " || k === "Spacebar") togglePlay();
    else if (/^[1-9]$/.test(k)) select(Number(k) - 1);
    else if (k === "l" || k === "L") { if (engine) applyLoop(!engine.loop.on, "loop"); }
    else if (k === "s" || k === "S") stop();
    else if (k === "[") setLoopEdgeHere("start");
    else if (k === "]") setLoopEdgeHere("end");
    else if ((k === "ArrowLeft" || k === "ArrowRight") && t !== ui.seek) {
      if (engine) seekTo(engine.position() + (k === "ArrowLeft" ? -1 : 1));
    } else if (/^[A-Za-z]$/.test(k) && labels.some((l) => l.toUpperCase() === k.toUpperCase())) {
      select(labels.findIndex((l) => l.toUpperCase() === k.toUpperCase()));
    } else handled = false;
    // Prevent the focused button from also acting on Space (it would toggle twice).
    if (handled) e.preventDefault();
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
    engine: null, output: null, last: null, state: () => state("peek", false) };
  window.addEventListener("message", (ev) => {
    if (ev.source !== window.parent || !ev.data || ev.data.type !== "streamlit:render") return;
    onRender(ev.data);
  });
  new ResizeObserver(() => Streamlit.setHeight(document.documentElement.scrollHeight)).observe(document.body);
  setInterval(tick, 50);
  Streamlit.ready();
})();
