// The A/B transport's audio engine, free of Streamlit: one playhead over several decoded sounds.
//
// Reusable in any page (the study's player, the static listening gallery); it lives in sonieval/assets/ab/:
//   <script src="engine.js"></script>           -> window.SonievalAB = {Engine, keyMap, keyAction, ...}
//   const ctx = new AudioContext();
//   const buffers = await Promise.all(urls.map((u) => fetch(u).then((r) => r.arrayBuffer()).then((b) => ctx.decodeAudioData(b))));
//   const engine = new SonievalAB.Engine(ctx, buffers, {mode: "crossfade", fadeS: 0.005});
//   engine.play(); engine.select(1); engine.setLoop(true, 1.0, 2.5); engine.pause();
//   setInterval(() => { engine.maintain(); engine.checkEnded(); }, 50);   // loop fades ahead, the end
//   const keys = SonievalAB.keyMap(["R", "A", "B"], 0);                   // R = r, A = 1 or a, B = 2 or b
//   document.addEventListener("keydown", (e) => { const act = SonievalAB.keyAction(e, keys); ... });
// Also works on an OfflineAudioContext (render and measure the engine's audio; tests do).
//
// Every position comes from the audio clock (ctx.currentTime), never from timers:
//   - "crossfade" (default): all sounds start together at one scheduled time and offset, each through
//     its own gain; a switch fades the old one out and the new one in over fadeS with equal-power
//     curves (cos/sin: the summed power of two uncorrelated sounds stays constant, where a linear
//     crossfade dips by 3 dB in the middle). The sounds share the sample clock: no drift.
//   - "restart": only the chosen sound plays; a switch starts the new one at the position the
//     transport will have a few milliseconds ahead and fades the old one out from then.
// Each start (play, seek, loop change) is a "segment": its own envelope fades in over fadeS, and a
// stop fades it out, so starting and stopping never click. A loop region plays with the sources'
// sample-accurate looping; the segment's envelope fades out over the last loopFadeS before each
// wrap and in again after it (a raised-cosine dip), so the jump from the loop's end to its start is
// never heard as a click. Fades are written as short piecewise-linear automation (STEPS points),
// which every browser schedules without overlap errors.
"use strict";

(function (root) {
  const LOOKAHEAD_S = 0.02; // starts are scheduled this far ahead so every source starts on the same frame
  const MIN_LOOP_S = 0.05;
  const STEPS = 16; // points per fade curve
  const HORIZON_S = 4; // loop-edge fades are scheduled this far ahead; maintain() tops them up

  // Equal-power move from gain a to gain b (u from 0 to 1): power a^2 -> b^2 along sin^2, never
  // overshooting; from 1 to 0 it is cos(pi u / 2), from 0 to 1 sin(pi u / 2).
  function powerLevel(a, b, u) {
    const s = Math.sin(0.5 * Math.PI * u) ** 2;
    return Math.sqrt(a * a * (1 - s) + b * b * s);
  }
  // Raised-cosine move (zero slope at both ends): the loop-edge dips and the segment fade-in.
  function hannLevel(a, b, u) { return a + (b - a) * (0.5 - 0.5 * Math.cos(Math.PI * u)); }

  // Freeze a parameter at time t (its scheduled value there) and drop what follows.
  function holdAt(param, t, value) {
    if (typeof param.cancelAndHoldAtTime === "function") {
      param.cancelAndHoldAtTime(t);
    } else {
      param.cancelScheduledValues(t);
      param.setValueAtTime(value, t);
    }
  }

  function ramp(param, shape, a, b, t, dur) {
    for (let k = 1; k <= STEPS; k++) param.linearRampToValueAtTime(shape(a, b, k / STEPS), t + (dur * k) / STEPS);
  }

  class Engine {
    constructor(ctx, buffers, options) {
      const o = options || {};
      this.ctx = ctx;
      this.buffers = buffers;
      this.mode = o.mode === "restart" ? "restart" : "crossfade";
      this.fadeS = o.fadeS > 0 ? o.fadeS : 0.005;
      this.loopFadeS = o.loopFadeS > 0 ? o.loopFadeS : this.fadeS;
      this.horizonS = o.horizonS > 0 ? o.horizonS : HORIZON_S;
      this.duration = Math.max.apply(null, buffers.map((b) => b.duration));
      this.output = ctx.createGain(); // constant 1: what is heard (a test may tap it)
      this.output.connect(o.destination || ctx.destination);
      this.seg = null; // the segment now playing
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

    // A start this close to the loop's end would wrap inside its own fade-in: start at the loop's start.
    _startPos(pos) {
      if (this.loop.on && (!this.inLoop(pos) || pos > this.loop.end - 2 * this.loopFadeS)) return this.loop.start;
      return pos;
    }

    _startSegment(pos) {
      const ctx = this.ctx;
      const when = ctx.currentTime + LOOKAHEAD_S;
      const env = ctx.createGain();
      env.gain.value = 0;
      env.connect(this.output);
      const seg = { env: env, gains: [], sources: [], fades: [], nextWrap: 0 };
      this.buffers.forEach((_, i) => {
        const g = ctx.createGain();
        const level = i === this.selected ? 1 : 0;
        g.gain.value = 0;
        g.gain.setValueAtTime(level, when);
        g.connect(env);
        seg.gains[i] = g;
        seg.fades[i] = { t0: when, t1: when, from: level, to: level };
      });
      this.seg = seg;
      this.segCtx = when;
      this.segPos = pos;
      const chosen = this.mode === "crossfade" ? this.buffers.map((_, i) => i) : [this.selected];
      for (const i of chosen) seg.sources[i] = this._source(seg, i, when, pos);
      env.gain.setValueAtTime(0, when);
      ramp(env.gain, hannLevel, 0, 1, when, this.fadeS);
      this._scheduleLoopFades(seg, when + this.horizonS);
    }

    _source(seg, i, when, offset) {
      const src = this.ctx.createBufferSource();
      src.buffer = this.buffers[i];
      if (this.loop.on) {
        src.loop = true;
        src.loopStart = this.loop.start;
        src.loopEnd = this.loop.end;
      }
      src.connect(seg.gains[i]);
      src.start(when, Math.min(offset, this.buffers[i].duration));
      return src;
    }

    // The dips at the loop's wraps, from the next one not yet scheduled up to `until`.
    _scheduleLoopFades(seg, until) {
      if (!this.loop.on || seg !== this.seg) return;
      const len = this.loop.end - this.loop.start;
      const first = this.segCtx + (this.loop.end - this.segPos);
      const f = Math.min(this.loopFadeS, len / 4);
      const g = seg.env.gain;
      for (;;) {
        const w = first + seg.nextWrap * len;
        if (w - f > until) break;
        seg.nextWrap += 1;
        if (w - f < this.segCtx + this.fadeS) continue; // inside the start fade: the fade-in covers it
        g.setValueAtTime(1, w - f);
        ramp(g, hannLevel, 1, 0, w - f, f);
        ramp(g, hannLevel, 0, 1, w, f);
      }
    }

    // Keep the loop's fades scheduled ahead of the clock (call it every few tens of milliseconds).
    maintain() {
      if (this.playing && this.seg) this._scheduleLoopFades(this.seg, this.ctx.currentTime + this.horizonS);
    }

    _endSegment() {
      const seg = this.seg;
      if (!seg) return;
      const t = Math.max(this.ctx.currentTime, this.segCtx);
      holdAt(seg.env.gain, t, 1);
      seg.env.gain.linearRampToValueAtTime(0, t + this.fadeS);
      const end = t + this.fadeS + 0.005;
      for (const src of seg.sources) if (src) src.stop(end);
      const last = seg.sources.find((s) => s);
      if (last) last.onended = () => seg.env.disconnect();
      this.seg = null;
    }

    play() {
      if (this.playing) return;
      let pos = this.segPos;
      if (!this.loop.on && pos >= this.duration) pos = 0;
      this._startSegment(this._startPos(pos));
      this.playing = true;
    }

    pause() {
      if (!this.playing) return;
      const pos = this.position();
      this._endSegment();
      this.playing = false;
      this.segPos = pos;
    }

    seek(pos) {
      pos = Math.max(0, Math.min(pos, this.duration));
      if (this.loop.on && !this.inLoop(pos)) pos = this.loop.start;
      if (this.playing) {
        this._endSegment();
        this._startSegment(this._startPos(pos));
      } else {
        this.segPos = pos;
      }
    }

    // Fade every gain of the segment towards its new level from time t (equal power).
    _fadeGains(seg, t) {
      seg.gains.forEach((g, i) => {
        const rec = seg.fades[i];
        const to = i === this.selected ? 1 : 0;
        const from = t >= rec.t1 ? rec.to : t <= rec.t0 ? rec.from : powerLevel(rec.from, rec.to, (t - rec.t0) / (rec.t1 - rec.t0));
        if (from === to && t >= rec.t1) return;
        holdAt(g.gain, t, from);
        ramp(g.gain, powerLevel, from, to, t, this.fadeS);
        seg.fades[i] = { t0: t, t1: t + this.fadeS, from: from, to: to };
      });
    }

    // Returns the audio-clock time from which the new sound is heard.
    select(i) {
      const old = this.selected;
      if (i === old) return this.ctx.currentTime;
      this.selected = i;
      const seg = this.seg;
      if (!this.playing || !seg) return this.ctx.currentTime;
      if (this.mode === "crossfade") {
        const t = Math.max(this.ctx.currentTime, this.segCtx);
        this._fadeGains(seg, t);
        return t;
      }
      const when = Math.max(this.ctx.currentTime + LOOKAHEAD_S, this.segCtx);
      const oldSrc = seg.sources[old];
      seg.sources[old] = undefined;
      seg.sources[i] = this._source(seg, i, when, this.positionAt(when));
      this._fadeGains(seg, when);
      if (oldSrc) oldSrc.stop(when + this.fadeS + 0.005);
      return when;
    }

    setLoop(on, start, end) {
      const pos = this.position();
      this.loop = { on: on, start: start, end: end };
      if (this.playing) {
        this._endSegment();
        this._startSegment(this._startPos(pos));
      } else if (on && !this.inLoop(this.segPos)) {
        this.segPos = start;
      }
    }

    // Without a loop the transport stops at the end; returns true when it just did.
    checkEnded() {
      if (!this.playing || this.loop.on) return false;
      if (this.segPos + (this.ctx.currentTime - this.segCtx) < this.duration) return false;
      this._endSegment();
      this.playing = false;
      this.segPos = 0;
      return true;
    }

    // Stop (with the fade-out) and let go of the audio graph once the fade has sounded.
    dispose() {
      this.pause();
      const output = this.output;
      setTimeout(() => output.disconnect(), 1000 * (LOOKAHEAD_S + this.fadeS) + 50);
    }
  }

  // ------------------------------------------------------------------ keys
  // Keys that match the labels: the reference (referenceIndex, -1 for none) is `r`; the others are
  // numbered 1..9 in order and also answer to their own letter (a one-letter label, not l or s, the
  // loop and stop keys, nor r when there is a reference). Without a reference every sound is numbered.
  const RESERVED = ["l", "s"];

  function keyMap(labels, referenceIndex) {
    const ref = typeof referenceIndex === "number" ? referenceIndex : -1;
    const taken = new Set(RESERVED.concat(ref >= 0 ? ["r"] : []));
    let n = 0;
    return labels.map((label, i) => {
      if (i === ref) return { digit: null, letter: "r" };
      n += 1;
      const lower = String(label).toLowerCase();
      return { digit: n <= 9 ? String(n) : null, letter: /^[a-z]$/.test(lower) && !taken.has(lower) ? lower : null };
    });
  }

  // What a keydown means: {type: "toggle"|"stop"|"loop"|"loopStart"|"loopEnd"|"seek"|"select", index?, delta?}
  // or null. Typing into a number or text field, and modified keys, mean nothing here; the arrow
  // keys on a range input (a slider) are the slider's.
  function keyAction(e, keys) {
    if (e.ctrlKey || e.metaKey || e.altKey) return null;
    const t = e.target;
    const tag = t && t.tagName;
    if (tag === "INPUT" && (t.type === "number" || t.type === "text")) return null;
    const k = e.key;
    if (k === " " || k === "Spacebar") return { type: "toggle" };
    if (k === "[") return { type: "loopStart" };
    if (k === "]") return { type: "loopEnd" };
    if (k === "ArrowLeft" || k === "ArrowRight") {
      if (tag === "INPUT" && t.type === "range") return null;
      return { type: "seek", delta: k === "ArrowLeft" ? -1 : 1 };
    }
    const lower = typeof k === "string" && k.length === 1 ? k.toLowerCase() : "";
    const byDigit = keys.findIndex((x) => x.digit === lower);
    if (lower && /[1-9]/.test(lower)) return byDigit >= 0 ? { type: "select", index: byDigit } : null;
    const byLetter = keys.findIndex((x) => x.letter === lower);
    if (lower && byLetter >= 0) return { type: "select", index: byLetter };
    if (lower === "l") return { type: "loop" };
    if (lower === "s") return { type: "stop" };
    return null;
  }

  // The keys of one sound as shown on its button: "r", "1 or a", "10" (none: "").
  function keyHint(key) { return [key.digit, key.letter].filter(Boolean).join(" or "); }

  const api = { Engine, keyMap, keyAction, keyHint, powerLevel, LOOKAHEAD_S, MIN_LOOP_S };
  if (typeof module !== "undefined" && module.exports) module.exports = api;
  else root.SonievalAB = api;
})(typeof window !== "undefined" ? window : globalThis);
