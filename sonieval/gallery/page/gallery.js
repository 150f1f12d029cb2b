// The listening gallery's page: filters, row sorting, the grid of cells, and one A/B transport for the
// row being played (SonievalAB.Engine from sonieval/assets/ab/engine.js, the study player's engine).
//
// Plain JavaScript, no build step, no server: the page is opened from the file system. Its data is the
// JSON in #gallery-data; a listening copy arrives as a one-line script (sounds/<key>.js calls
// SonievalGallery.sound(key, base64)), because file:// pages may load <script src> but not fetch() or
// XHR; thumbnails are <img loading="lazy">. A row's sounds are fetched and decoded when the row is first
// played: the original and the columns shown, so one transport switches among them at the same playhead.
"use strict";

(function () {
  const DATA = JSON.parse(document.getElementById("gallery-data").textContent);
  const AB = window.SonievalAB;
  const META = DATA.meta, SYSTEMS = DATA.systems, CLIPS = DATA.clips, MEASURES = DATA.measures;
  const PAGE = META.page_columns || 24;
  const CEILING = "ceiling";
  const CEILING_FACETS = ["codec", "control"]; // the ceiling answers only to these filters (page.py says why)
  const CONTROL_RANK = { none: 0, twin: 1, shuffled: 2, untrained: 3, ceiling: 4 };
  const CONTROL_NAME = { none: "trained", twin: "random twin", shuffled: "shuffled", untrained: "untrained", ceiling: "ceiling" };
  // why a copy is quieter than its row (a copy at its row's level, "" or "clip", says nothing)
  const LIMITED = { true_peak: "held below the true-peak ceiling", gain_cap: "gain capped (near-silent)", silent: "silent" };
  const MAX_BUFFERS = 160; // decoded sounds kept (about 0.9 MB each for 5 s)
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "id" || k === "title" || k === "type" || k === "colspan") e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children || []) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  // ---------------------------------------------------------------- sounds: <script src>, then decode
  const arrived = new Map(); // key -> base64 MP3, until decoded
  const decoding = new Map(); // key -> promise of its AudioBuffer
  const buffers = new Map(); // key -> AudioBuffer, the least recently used first
  let ctx = null;
  window.SonievalGallery = { sound(key, b64) { arrived.set(key, b64); } };

  function audioContext() {
    if (!ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      try { ctx = new Ctx({ sampleRate: META.copy.rate || 44100 }); } catch (e) { ctx = new Ctx(); }
    }
    return ctx;
  }

  function loadScript(key) {
    return new Promise((resolve, reject) => {
      const s = document.createElement("script");
      s.src = "sounds/" + key + ".js";
      s.onload = () => { s.remove(); arrived.has(key) ? resolve() : reject(new Error("sounds/" + key + ".js holds no sound")); };
      s.onerror = () => { s.remove(); reject(new Error("sound file sounds/" + key + ".js is missing")); };
      document.head.appendChild(s);
    });
  }

  function decodeBase64(b64) {
    const bin = atob(b64), bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }

  function bufferOf(key) {
    if (buffers.has(key)) {
      const b = buffers.get(key);
      buffers.delete(key);
      buffers.set(key, b);
      return Promise.resolve(b);
    }
    if (!decoding.has(key)) {
      const p = loadScript(key)
        .then(() => { const b64 = arrived.get(key); arrived.delete(key); return audioContext().decodeAudioData(decodeBase64(b64)); })
        .then((buf) => {
          buffers.set(key, buf);
          while (buffers.size > MAX_BUFFERS) buffers.delete(buffers.keys().next().value);
          return buf;
        })
        .finally(() => decoding.delete(key));
      decoding.set(key, p);
    }
    return decoding.get(key);
  }

  // ---------------------------------------------------------------- what is shown
  const state = { selected: {}, order: "family", page: 0, sort: "clip", focus: -1, direction: "best", pinned: -1 };
  for (const f of DATA.facets) state.selected[f.name] = new Set(f.values);

  function passes(s) {
    for (const f of DATA.facets) {
      if (s.control === CEILING && !CEILING_FACETS.includes(f.name)) continue;
      if (!state.selected[f.name].has(s.facets[f.name])) return false;
    }
    return true;
  }

  function filtered() {
    const ix = SYSTEMS.map((_, i) => i).filter((i) => i === state.pinned || passes(SYSTEMS[i]));
    if (state.order !== "control") return ix;
    return ix.sort((a, b) => SYSTEMS[a].g - SYSTEMS[b].g || CONTROL_RANK[SYSTEMS[a].control] - CONTROL_RANK[SYSTEMS[b].control] || a - b);
  }

  function shown() {
    const all = filtered();
    const pages = Math.max(1, Math.ceil(all.length / PAGE));
    state.page = Math.max(0, Math.min(state.page, pages - 1));
    return { all: all, cols: all.slice(state.page * PAGE, (state.page + 1) * PAGE), pages: pages };
  }

  const cellOf = (clip, sys) => (sys < 0 ? CLIPS[clip].original : CLIPS[clip].cells[sys]);

  function valueOf(clip, sys, m) {
    const c = cellOf(clip, sys);
    const v = c && c.m ? c.m[m] : null;
    return typeof v === "number" ? v : null;
  }

  // The rows' order: clip order, category, a measure of the focus system, or its difference from a
  // control on the same clip (trained minus control), each turned so that larger is better.
  function goodness(clip) {
    const [kind, mi, control] = state.sort.split(":");
    const m = MEASURES[+mi];
    if (!m || state.focus < 0) return null;
    const sign = m.direction === "lower" ? -1 : 1;
    const own = valueOf(clip, state.focus, +mi);
    if (kind === "m") return own === null ? null : sign * own;
    const other = SYSTEMS[state.focus].controls[control];
    const theirs = other === undefined ? null : valueOf(clip, other, +mi);
    return own === null || theirs === null ? null : sign * (own - theirs);
  }

  function rowOrder() {
    const rows = CLIPS.map((_, i) => i);
    if (state.sort === "clip") return rows;
    if (state.sort === "category") return rows.sort((a, b) => CLIPS[a].category.localeCompare(CLIPS[b].category) || a - b);
    const key = rows.map(goodness);
    const flip = state.direction === "best" ? -1 : 1;
    return rows.sort((a, b) => {
      if (key[a] === null || key[b] === null) return (key[a] === null) - (key[b] === null) || a - b; // undefined last
      return flip * (key[a] - key[b]) || a - b;
    });
  }

  // ---------------------------------------------------------------- header, filters, sorting
  function renderHead() {
    $("title").textContent = META.title;
    const c = META.copy;
    const parts = [
      CLIPS.length + " clips × " + SYSTEMS.length + " systems",
      META.data_label || "",
      "sounds: listening copies aligned to " + c.target_lufs + " LUFS (ITU-R BS.1770) under " + c.ceiling_dbtp +
        " dBTP, one level per row (its original's), " + c.format + (c.kbps ? ", " + c.kbps + " kbit/s" : ""),
      "pictures: mel spectrogram (0 dB = the row original's loudest bin, " + META.thumbs.range_db + " dB range) above the waveform (±1 = the original's peak)",
    ];
    const about = $("about");
    about.textContent = parts.filter(Boolean).join(" · ") + ". ";
    if (SYSTEMS.some((s) => s.mark)) about.append("† a randomly initialised codec, ‡ a randomly initialised encoder (the leaderboard's marks). ");
    const marks = META.marks || {};
    if (marks.n_ratings) {
      const span = el("span", { class: marks.simulated ? "warn" : "", text: (marks.simulated ? "SIMULATED marks" : "Marks") + " from " + marks.source + " (" + marks.n_ratings + " ratings, " + marks.n_raters + " raters): mean and n per attribute. " });
      about.append(span);
    }
    for (const n of META.notes || []) about.append(el("span", { class: "warn", text: n + ". " }));
  }

  function renderFilters() {
    const box = $("filters");
    box.replaceChildren();
    for (const f of DATA.facets) {
      const set = state.selected[f.name];
      const all = el("button", { type: "button", class: "all", text: set.size === f.values.length ? "none" : "all", title: "choose every value, or none" });
      all.addEventListener("click", () => {
        if (set.size === f.values.length) set.clear();
        else f.values.forEach((v) => set.add(v));
        state.page = 0;
        update();
      });
      const boxes = f.values.map((v) => {
        const input = el("input", { type: "checkbox", checked: set.has(v), "data-facet": f.name, "data-value": v });
        input.addEventListener("change", () => { input.checked ? set.add(v) : set.delete(v); state.page = 0; update(); });
        return el("label", {}, [input, " " + (f.name === "control" ? CONTROL_NAME[v] || v : v === "" ? "—" : v)]);
      });
      box.append(el("fieldset", { "data-facet": f.name }, [el("legend", { text: f.name }), ...boxes, all]));
    }
  }

  function renderSortChoices(view) {
    const focus = $("focus");
    const keep = state.focus;
    focus.replaceChildren(...view.all.map((i) => el("option", { value: String(i), text: SYSTEMS[i].id, selected: i === keep })));
    if (!view.all.includes(state.focus)) {
      const trained = view.all.find((i) => SYSTEMS[i].control === "none");
      state.focus = trained !== undefined ? trained : view.all.length ? view.all[0] : -1;
      focus.value = String(state.focus);
    }
    const sort = $("sort");
    const options = [["clip", "clip order"], ["category", "category"]];
    MEASURES.forEach((m, i) => options.push(["m:" + i, m.id + " (" + m.direction + " is better)"]));
    const controls = state.focus >= 0 ? Object.keys(SYSTEMS[state.focus].controls) : [];
    MEASURES.forEach((m, i) => controls.filter((c) => c !== CEILING).forEach((c) => options.push(["d:" + i + ":" + c, m.id + ": trained − " + c])));
    if (!options.some(([v]) => v === state.sort)) state.sort = "clip";
    sort.replaceChildren(...options.map(([v, t]) => el("option", { value: v, text: t, selected: v === state.sort })));
  }

  // ---------------------------------------------------------------- the grid
  function fmt(v) {
    if (typeof v !== "number") return "—";
    const a = Math.abs(v);
    return a !== 0 && (a < 0.001 || a >= 1e5) ? v.toExponential(2) : v.toFixed(a >= 100 ? 1 : 3);
  }

  function measureLines(clip, sys, c) {
    if (!c.m || !MEASURES.length) return null;
    const s = SYSTEMS[sys];
    const lines = MEASURES.map((m, i) => {
      const v = c.m[i];
      let cls = "";
      const ctl = Object.entries(s.controls).filter(([k]) => k !== CEILING).map(([, j]) => valueOf(clip, j, i)).filter((x) => x !== null);
      if (typeof v === "number" && ctl.length) {
        const better = (x) => (m.direction === "lower" ? v < x : v > x);
        cls = ctl.every(better) ? "better" : ctl.every((x) => !better(x) && x !== v) ? "worse" : "";
      }
      const why = typeof v === "string" ? " (undefined: " + v + ")" : "";
      return el("div", { class: cls, title: m.title + " (" + m.direction + " is better)" + why + (cls ? "; " + cls + " than every control on this clip" : "") }, [m.id + " " + fmt(v)]);
    });
    return el("div", { class: "vals" }, lines);
  }

  function marksLine(c) {
    if (!c.r || !Object.keys(c.r).length) return null;
    const text = Object.entries(c.r).map(([a, [mean, n]]) => a + " " + mean.toFixed(2) + " (n " + n + ")").join(" · ");
    return el("div", { class: "marks", title: "mean mark raters gave this sound, and how many marks" }, [text]);
  }

  function levelLine(c) {
    const gain = typeof c.g === "number" ? (c.g >= 0 ? "+" : "") + c.g.toFixed(1) + " dB" : "";
    const why = LIMITED[c.w] ? " · " + LIMITED[c.w] : "";
    const title = "listening copy: " + (c.l === null ? "below the −70 LUFS gate" : c.l + " LUFS") + ", true peak " + c.p + " dBTP, gain " + gain + why + ", " + c.s + " s";
    return el("div", { class: "level", title: title }, ["gain " + gain + why]);
  }

  function cellButton(clip, sys, c, label) {
    if (!c) return el("div", { class: "nosound", text: "not sonified" });
    if (!c.k) return el("div", { class: "nosound", text: "no sound: " + c.e });
    const img = el("img", { src: c.t, loading: "lazy", decoding: "async", alt: "spectrogram and waveform: " + label, width: 204, height: 80 });
    img.addEventListener("error", () => img.replaceWith(el("div", { class: "nosound", text: "picture missing: " + c.t })));
    const pic = el("div", { class: "pic" }, [img, el("div", { class: "head", "data-seconds": c.s })]);
    const b = el("button", { type: "button", class: "cell", "data-clip": clip, "data-sys": sys, title: "play " + label + " (switches at the same moment)" }, [pic]);
    const cell = el("div", {}, [b, measureLines(clip, sys, c), marksLine(c), levelLine(c)]);
    return cell;
  }

  function groupRow(cols) {
    const tr = el("tr", { class: "groups" }, [el("th", { class: "lead", text: "clip · original" })]);
    let k = 0;
    while (k < cols.length) {
      const g = SYSTEMS[cols[k]].group;
      let n = 1;
      while (k + n < cols.length && SYSTEMS[cols[k + n]].group === g) n++;
      tr.append(el("th", { colspan: n, text: g }));
      k += n;
    }
    return tr;
  }

  function systemHeader(i, k) {
    const s = SYSTEMS[i];
    const focus = el("button", { type: "button", class: "focus-btn", "data-focus": i, text: "sort rows by this" });
    const key = k < 9 ? "key " + (k + 1) : "";
    return el("th", { class: "sys" + (i === state.focus ? " focused" : "") + (i === state.pinned ? " target" : ""), id: "system=" + s.id, scope: "col" }, [
      el("span", { class: "badge " + s.control, text: CONTROL_NAME[s.control] || s.control }),
      s.mark ? el("span", { text: s.mark + " " }) : null,
      el("span", { class: "key", text: key }),
      el("span", { class: "sysid", text: s.id }),
      focus,
    ]);
  }

  function renderGrid(view) {
    const cols = view.cols;
    const head = el("thead", {}, [groupRow(cols), el("tr", { class: "systems" }, [el("th", { class: "lead", text: "Original (key r)" }), ...cols.map(systemHeader)])]);
    const body = el("tbody");
    for (const clip of rowOrder()) {
      const c = CLIPS[clip];
      const lead = el("th", { class: "lead", scope: "row" }, [
        el("div", { class: "clipname", text: c.id }),
        el("div", { class: "category", text: c.category }),
        cellButton(clip, -1, c.original, "the original of " + c.id),
      ]);
      body.append(el("tr", { "data-clip": clip, class: clip === player.clip ? "active" : "" }, [lead, ...cols.map((i) => el("td", {}, [cellButton(clip, i, c.cells[i], SYSTEMS[i].id)]))]));
    }
    $("grid").replaceChildren(head, body);
    $("pageinfo").textContent = view.all.length ? "columns " + (state.page * PAGE + 1) + "–" + (state.page * PAGE + cols.length) + " of " + view.all.length + (view.pages > 1 ? " (page " + (state.page + 1) + " of " + view.pages + ")" : "") : "no system matches the filters";
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= view.pages - 1;
    markSelected();
  }

  function update() {
    const view = shown();
    const active = document.activeElement;
    const where = active && active.dataset ? [active.dataset.facet, active.dataset.value] : null;
    renderFilters();
    if (where && where[0] !== undefined) { // keep the keyboard where it was: the same checkbox
      const again = Array.from(document.querySelectorAll("#filters input")).find((i) => i.dataset.facet === where[0] && i.dataset.value === where[1]);
      if (again) again.focus();
    }
    renderSortChoices(view);
    renderGrid(view);
    if (player.clip >= 0) activate(player.clip, player.sys, { keep: true }); // the row's sounds follow the columns
  }

  // ---------------------------------------------------------------- the row's transport
  const player = { clip: -1, sys: -1, sounds: [], cols: [-1], engine: null, keys: AB.keyMap(["R"], 0), token: 0, seeking: false };

  function status(text) { $("status").textContent = text || ""; }

  function enable(on) {
    for (const id of ["play", "stop", "seek", "loop", "loop-start", "loop-end"]) $(id).disabled = !on;
  }

  function teardown() {
    if (player.engine) player.engine.dispose();
    player.engine = null;
    window.sonievalGallery.engine = null;
    enable(false);
  }

  function sameList(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }

  // Make `clip` the playing row with `sys` (-1: the original) selected. A new row (or new columns) builds
  // the row's engine over the original and the columns shown; within the row a switch keeps the playhead.
  async function activate(clip, sys, opts) {
    opts = opts || {};
    const cols = shown().cols;
    const wanted = [-1, ...cols].filter((s) => cellOf(clip, s) && cellOf(clip, s).k);
    if (!wanted.includes(sys)) sys = -1;
    if (player.engine && player.clip === clip && sameList(player.sounds, wanted)) {
      select(sys);
      if (opts.play && !player.engine.playing) play();
      return;
    }
    const old = player.engine;
    const carry = old && player.clip === clip ? { pos: old.position(), playing: old.playing, loop: old.loop } : null;
    teardown();
    const token = ++player.token;
    Object.assign(player, { clip: clip, sys: sys, sounds: wanted });
    markActiveRow();
    status("loading " + wanted.length + " sounds…");
    let bufs;
    try {
      bufs = await Promise.all(wanted.map((s) => bufferOf(cellOf(clip, s).k)));
    } catch (err) {
      if (token === player.token) status("could not load the row's sounds: " + err.message);
      return;
    }
    if (token !== player.token) return; // another row (or other columns) was chosen meanwhile
    const engine = new AB.Engine(audioContext(), bufs, { mode: "crossfade", fadeS: 0.005 });
    player.engine = engine;
    window.sonievalGallery.engine = engine;
    player.keys = AB.keyMap(["R", ...cols.map((s) => SYSTEMS[s].id)], 0); // key k: the k-th column shown
    player.cols = [-1, ...cols];
    $("seek").max = engine.duration.toFixed(2);
    $("loop-end").value = engine.duration.toFixed(1);
    if (carry && carry.loop.on) { engine.setLoop(true, carry.loop.start, Math.min(carry.loop.end, engine.duration)); }
    else if ($("loop").checked) applyLoop();
    if (carry) engine.seek(Math.min(carry.pos, engine.duration));
    enable(true);
    status("");
    select(sys);
    if (opts.play || (carry && carry.playing)) play();
    updateButtons();
  }

  function select(sys) {
    player.sys = sys;
    if (player.engine) player.engine.select(Math.max(0, player.sounds.indexOf(sys)));
    markSelected();
    const c = CLIPS[player.clip];
    $("now").textContent = c ? c.id + " · " + (sys < 0 ? "original" : SYSTEMS[sys].id) : "";
  }

  function play() {
    if (!player.engine) return;
    audioContext().resume();
    player.engine.play();
    updateButtons();
  }

  function toggle() {
    if (!player.engine) return;
    player.engine.playing ? player.engine.pause() : play();
    updateButtons();
  }

  function stop() {
    if (!player.engine) return;
    player.engine.pause();
    player.engine.seek(player.engine.loop.on ? player.engine.loop.start : 0);
    updateButtons();
  }

  function applyLoop() {
    const e = player.engine;
    if (!e) return;
    let a = parseFloat($("loop-start").value) || 0, b = parseFloat($("loop-end").value) || e.duration;
    a = Math.max(0, Math.min(a, e.duration - AB.MIN_LOOP_S));
    b = Math.max(a + AB.MIN_LOOP_S, Math.min(b, e.duration));
    e.setLoop($("loop").checked, a, b);
  }

  function loopEdgeHere(which) {
    const e = player.engine;
    if (!e) return;
    $(which === "start" ? "loop-start" : "loop-end").value = e.position().toFixed(2);
    applyLoop();
  }

  function updateButtons() {
    const e = player.engine;
    $("play").textContent = e && e.playing ? "Pause" : "Play";
  }

  function markActiveRow() {
    for (const tr of document.querySelectorAll("#grid tbody tr")) tr.classList.toggle("active", +tr.dataset.clip === player.clip);
    markSelected();
  }

  function markSelected() {
    for (const b of document.querySelectorAll("#grid .cell.selected")) b.classList.remove("selected");
    const row = document.querySelector('#grid tbody tr[data-clip="' + player.clip + '"]');
    const b = row && row.querySelector('.cell[data-sys="' + player.sys + '"]');
    if (b) b.classList.add("selected");
  }

  function moveRow(delta) {
    const rows = rowOrder();
    const at = rows.indexOf(player.clip);
    const next = rows[Math.max(0, Math.min(rows.length - 1, at < 0 ? 0 : at + delta))];
    const playing = player.engine && player.engine.playing;
    activate(next, player.sys, { play: playing });
    const tr = document.querySelector('#grid tbody tr[data-clip="' + next + '"]');
    if (tr) tr.scrollIntoView({ block: "nearest" });
  }

  function tick() {
    const e = player.engine;
    if (!e) return;
    e.maintain();
    if (e.checkEnded()) updateButtons();
    const pos = e.position();
    $("time").textContent = pos.toFixed(2) + " / " + e.duration.toFixed(2) + " s";
    if (!player.seeking) $("seek").value = pos;
    for (const h of document.querySelectorAll("#grid tr.active .head")) {
      h.style.left = Math.min(100, (100 * pos) / (+h.dataset.seconds || e.duration)) + "%";
    }
  }

  // ---------------------------------------------------------------- links: #system=<id>
  function openLink() {
    const m = /^#system=(.+)$/.exec(location.hash);
    if (!m) return;
    const id = decodeURIComponent(m[1]);
    const i = SYSTEMS.findIndex((s) => s.id === id);
    if (i < 0) { status("no system " + id + " in this gallery"); return; }
    state.pinned = i;
    state.focus = i;
    const all = filtered();
    state.page = Math.floor(all.indexOf(i) / PAGE);
    update();
    const th = document.getElementById("system=" + id);
    if (th) th.scrollIntoView({ block: "nearest", inline: "center" });
  }

  // ---------------------------------------------------------------- wiring
  $("grid").addEventListener("click", (e) => {
    const f = e.target.closest(".focus-btn");
    if (f) { state.focus = +f.dataset.focus; update(); return; }
    const b = e.target.closest(".cell");
    if (b) activate(+b.dataset.clip, +b.dataset.sys, { play: true });
  });
  $("order").addEventListener("change", () => { state.order = $("order").value; update(); });
  $("prev").addEventListener("click", () => { state.page--; update(); });
  $("next").addEventListener("click", () => { state.page++; update(); });
  $("sort").addEventListener("change", () => { state.sort = $("sort").value; renderGrid(shown()); });
  $("focus").addEventListener("change", () => { state.focus = +$("focus").value; update(); });
  $("direction").addEventListener("change", () => { state.direction = $("direction").value; renderGrid(shown()); });
  $("play").addEventListener("click", toggle);
  $("stop").addEventListener("click", stop);
  $("seek").addEventListener("input", () => { player.seeking = true; });
  $("seek").addEventListener("change", () => { player.seeking = false; if (player.engine) player.engine.seek(parseFloat($("seek").value)); });
  for (const id of ["loop", "loop-start", "loop-end"]) $(id).addEventListener("change", applyLoop);
  window.addEventListener("hashchange", openLink);

  document.addEventListener("keydown", (e) => {
    const t = e.target;
    if (t && (t.tagName === "SELECT" || (t.tagName === "INPUT" && (t.type === "number" || t.type === "text")))) return;
    if ((e.key === "ArrowUp" || e.key === "ArrowDown") && !(e.ctrlKey || e.metaKey || e.altKey)) {
      e.preventDefault();
      moveRow(e.key === "ArrowUp" ? -1 : 1);
      return;
    }
    const act = AB.keyAction(e, player.keys);
    if (!act) return;
    e.preventDefault(); // a focused button must not also act on Space
    if (!player.engine) {
      if (act.type === "toggle") activate(player.clip >= 0 ? player.clip : rowOrder()[0], -1, { play: true });
      return;
    }
    if (act.type === "toggle") toggle();
    else if (act.type === "stop") stop();
    else if (act.type === "select") {
      const sys = player.cols[act.index];
      if (player.sounds.includes(sys)) select(sys);
      else status("no sound in this row for " + (SYSTEMS[sys] ? SYSTEMS[sys].id : "that key"));
    }
    else if (act.type === "loop") { $("loop").checked = !$("loop").checked; applyLoop(); }
    else if (act.type === "loopStart") loopEdgeHere("start");
    else if (act.type === "loopEnd") loopEdgeHere("end");
    else if (act.type === "seek") player.engine.seek(player.engine.position() + act.delta);
  });
  document.addEventListener("keyup", (e) => {
    const t = e.target;
    const typing = t && t.tagName === "INPUT" && (t.type === "number" || t.type === "text");
    if ((e.key === " " || e.key === "Spacebar") && !typing) e.preventDefault();
  });

  // What tests (and curious users) read: the page's state, its engine, the row being played.
  window.sonievalGallery = {
    engine: null,
    get ctx() { return ctx; },
    get player() { return player; },
    get state() { return state; },
    shown: () => shown(),
    rowOrder: () => rowOrder(),
    bufferOf: bufferOf,
    activate: activate,
  };

  renderHead();
  update();
  openLink();
  setInterval(tick, 50);
})();
