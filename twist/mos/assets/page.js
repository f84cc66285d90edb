// twist-mos listening-test page: MMOS (meaningfulness MOS, Lakhotia et al. 2021) without a server.
// The running order is computed here exactly as twist/mos/plan.py computes it; keep the two in step.
(function () {
  "use strict";

  const M = JSON.parse(document.getElementById("manifest").textContent);
  const STORE = "twist-mos:" + M.test_id;
  const RATER_RE = /^[A-Za-z0-9._@-]{1,64}$/;
  const SCORES = [];
  for (let s = M.scale.min; s <= M.scale.max + 1e-9; s += M.scale.step) SCORES.push(Math.round(s * 2) / 2);
  const ANCHORS = M.scale.anchors; // {"1": "...", ...}
  const byId = {};
  M.items.forEach((it) => { byId[it.id] = it; });
  const $ = (id) => document.getElementById(id);

  // ---- the running order (mirrors twist/mos/plan.py) -------------------------------------
  function fnv1a32(text) {
    let h = 0x811c9dc5;
    for (const b of new TextEncoder().encode(text)) {
      h ^= b;
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h >>> 0;
  }

  class XorShift32 {
    constructor(seed) {
      this.s = (seed >>> 0) || 0x9e3779b9;
      for (let i = 0; i < 8; i++) this.nextU32();
    }
    nextU32() {
      let x = this.s;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.s = x >>> 0;
      return this.s;
    }
    random() { return this.nextU32() / 4294967296; }
    below(n) { return Math.floor(this.random() * n); }
  }

  function shuffle(xs, rng) {
    for (let i = xs.length - 1; i > 0; i--) {
      const j = rng.below(i + 1);
      const t = xs[i]; xs[i] = xs[j]; xs[j] = t;
    }
    return xs;
  }

  function raterPlan(rater) {
    const rng = new XorShift32(fnv1a32(String(M.seed) + "|" + rater));
    const prompts = Array.from(new Set(M.items.map((it) => it.prompt))).sort((a, b) => a - b);
    const k = M.prompts_per_rater;
    const chosen = new Set(k != null && k > 0 && k < prompts.length ? shuffle(prompts.slice(), rng).slice(0, k) : prompts);
    const order = shuffle(M.items.filter((it) => chosen.has(it.prompt)).map((it) => it.id), rng);
    const slots = order.map((id) => ({ item: id, repeat: false }));
    if (M.repeat && order.length) {
      const half = Math.floor((order.length + 1) / 2);
      const first = rng.below(half);
      const at = half + rng.below(order.length - half + 1);
      slots.splice(at, 0, { item: order[first], repeat: true });
    }
    return slots;
  }

  // ---- state, kept in localStorage so a reload resumes ----------------------------------
  let storageOk = true;
  function load() {
    try {
      const raw = window.localStorage.getItem(STORE);
      return raw ? JSON.parse(raw) : null;
    } catch (e) {
      storageOk = false;
      return null;
    }
  }
  function save() {
    try {
      window.localStorage.setItem(STORE, JSON.stringify(state));
    } catch (e) {
      storageOk = false;
      $("storage-warning").hidden = false;
    }
  }
  let state = load();

  // ---- listening time: seconds of audio actually played, seeks excluded ----------------
  const audio = $("audio");
  let last = 0;
  let seeking = false;
  function tick() {
    if (!state || state.pos >= state.plan.length) return;
    if (!seeking) {
      const d = audio.currentTime - last;
      if (d > 0 && d < 30) {
        state.listen[state.pos] = (state.listen[state.pos] || 0) + d;
        save();
      }
    }
    last = audio.currentTime;
  }
  audio.addEventListener("play", () => { last = audio.currentTime; });
  audio.addEventListener("timeupdate", tick);
  audio.addEventListener("pause", tick);
  audio.addEventListener("ended", tick);
  audio.addEventListener("seeking", () => { seeking = true; });
  audio.addEventListener("seeked", () => { seeking = false; last = audio.currentTime; });
  audio.addEventListener("play", () => { $("play").textContent = "Pause"; });
  audio.addEventListener("pause", () => { $("play").textContent = "Play"; });

  function togglePlay() {
    if (audio.paused) audio.play().catch(() => {});
    else audio.pause();
  }
  function replay() {
    audio.currentTime = 0;
    audio.play().catch(() => {});
  }
  $("play").addEventListener("click", togglePlay);

  // ---- screens -------------------------------------------------------------------------
  function show(id) {
    for (const s of ["intro", "rate", "done"]) $(s).hidden = s !== id;
  }

  function planSeconds(plan) {
    return plan.reduce((acc, s) => acc + byId[s.item].duration, 0);
  }

  function showIntro() {
    const plan = raterPlan("preview");
    $("n-clips").textContent = String(plan.length);
    // listening plus a few seconds to decide, per clip
    $("n-minutes").textContent = String(Math.max(1, Math.round((planSeconds(plan) + 8 * plan.length) / 60)));
    const fromUrl = new URLSearchParams(window.location.search).get("rater");
    if (fromUrl) $("rater").value = fromUrl;
    show("intro");
    $("rater").focus();
  }

  $("start-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const rater = $("rater").value.trim();
    if (!RATER_RE.test(rater)) {
      $("rater-error").textContent = "Please type an id of 1 to 64 letters, digits or . _ - @ (no spaces).";
      $("rater-error").hidden = false;
      $("rater").focus();
      return;
    }
    const plan = raterPlan(rater);
    state = {
      version: 1, test_id: M.test_id, rater: rater, plan: plan, pos: 0,
      scores: plan.map(() => null), listen: plan.map(() => 0), on_item: plan.map(() => 0),
      started: new Date().toISOString(), finished: null,
    };
    save();
    showItem(false);
  });

  // the score options, built once
  const options = $("scale-options");
  SCORES.forEach((s) => {
    const label = document.createElement("label");
    label.className = "opt";
    const input = document.createElement("input");
    input.type = "radio";
    input.name = "score";
    input.value = String(s);
    input.id = "score-" + String(s).replace(".", "_");
    const span = document.createElement("span");
    const b = document.createElement("b");
    b.textContent = String(s);
    span.appendChild(b);
    if (ANCHORS[String(s)]) {
      const small = document.createElement("small");
      small.textContent = ANCHORS[String(s)];
      span.appendChild(small);
    }
    label.appendChild(input);
    label.appendChild(span);
    options.appendChild(label);
    input.addEventListener("change", () => setScore(s));
  });

  let shownAt = 0;
  function setScore(s) {
    if (!state || state.pos >= state.plan.length) return;
    s = Math.min(M.scale.max, Math.max(M.scale.min, s));
    state.scores[state.pos] = s;
    save();
    const input = $("score-" + String(s).replace(".", "_"));
    if (input) input.checked = true;
    $("next").disabled = false;
  }

  function showItem(resumed) {
    const n = state.plan.length;
    const slot = state.plan[state.pos];
    const it = byId[slot.item];
    show("rate");
    $("progress").max = n;
    $("progress").value = state.pos;
    $("progress-text").textContent = "Recording " + (state.pos + 1) + " of " + n;
    if (resumed) {
      $("resumed").textContent = "Welcome back, " + state.rater + ": you are at recording " + (state.pos + 1) + " of " + n + ".";
      $("resumed").hidden = false;
    } else {
      $("resumed").hidden = true;
    }
    audio.pause();
    audio.src = it.audio;
    audio.load();
    last = 0;
    seeking = false;
    for (const input of options.querySelectorAll("input")) input.checked = false;
    const s = state.scores[state.pos];
    if (s != null) setScore(s);
    else $("next").disabled = true;
    shownAt = Date.now();
    $("clip-h").focus();
  }

  $("rate-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!state || state.scores[state.pos] == null) return;
    tick();
    audio.pause();
    state.on_item[state.pos] += (Date.now() - shownAt) / 1000;
    state.pos += 1;
    if (state.pos >= state.plan.length) {
      state.finished = new Date().toISOString();
      save();
      showDone(true);
    } else {
      save();
      showItem(false);
    }
  });

  // ---- the ratings file ----------------------------------------------------------------
  function round3(x) { return Math.round(x * 1000) / 1000; }

  function ratingsRows() {
    return state.plan.map((slot, i) => ({
      position: i,
      item: slot.item,
      score: state.scores[i],
      listen_seconds: round3(state.listen[i] || 0),
      duration: byId[slot.item].duration,
      repeat: slot.repeat,
      seconds_on_item: round3(state.on_item[i] || 0),
    }));
  }

  function fileStem() { return "ratings-" + M.test_id + "-" + state.rater; }

  function download(name, text, type) {
    const url = URL.createObjectURL(new Blob([text], { type: type }));
    const a = document.createElement("a");
    a.href = url;
    a.download = name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  function ratingsJson() {
    return JSON.stringify({
      format: "twist-mos-ratings", version: 1, test_id: M.test_id, rater: state.rater,
      started: state.started, finished: state.finished, user_agent: navigator.userAgent,
      ratings: ratingsRows(),
    }, null, 1);
  }

  function ratingsCsv() {
    const cols = ["test_id", "rater", "position", "item", "score", "listen_seconds", "duration", "repeat", "seconds_on_item"];
    const lines = [cols.join(",")];
    for (const r of ratingsRows()) {
      lines.push([M.test_id, state.rater, r.position, r.item, r.score, r.listen_seconds, r.duration, r.repeat,
        r.seconds_on_item].join(","));
    }
    return lines.join("\n") + "\n";
  }

  function showDone(justFinished) {
    show("done");
    $("file-name").textContent = fileStem() + ".json";
    $("contact").textContent = M.contact || "";
    $("contact").hidden = !M.contact;
    $("done-h").focus();
    if (justFinished) download(fileStem() + ".json", ratingsJson(), "application/json");
  }
  $("download-json").addEventListener("click", () => download(fileStem() + ".json", ratingsJson(), "application/json"));
  $("download-csv").addEventListener("click", () => download(fileStem() + ".csv", ratingsCsv(), "text/csv"));
  $("new-session").addEventListener("click", () => {
    // the finished session leaves the device; its file is the record
    try { window.localStorage.removeItem(STORE); } catch (e) { /* nothing kept anyway */ }
    state = null;
    $("rater").value = "";
    showIntro();
  });

  // ---- keyboard ------------------------------------------------------------------------
  document.addEventListener("keydown", (ev) => {
    if ($("rate").hidden || ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (ev.target && ev.target.tagName === "INPUT" && ev.target.type === "text") return;
    const k = ev.key;
    const cur = state && state.scores[state.pos];
    if (k === " " || k === "p" || k === "P") { ev.preventDefault(); togglePlay(); }
    else if (k === "r" || k === "R") { ev.preventDefault(); replay(); }
    else if (k >= "1" && k <= "5" && k.length === 1) { ev.preventDefault(); setScore(Number(k)); }
    else if (k === "+" || k === "=") { ev.preventDefault(); setScore(cur == null ? 3 : cur + M.scale.step); }
    else if (k === "-" || k === "_") { ev.preventDefault(); setScore(cur == null ? 3 : cur - M.scale.step); }
    else if (k === "Enter") {
      ev.preventDefault();
      if ($("rate-form").requestSubmit) $("rate-form").requestSubmit();
      else $("next").click(); // older mobile browsers
    }
  });

  // for the automated page test and for curious raters: nothing here changes the state
  window.twistMos = { plan: raterPlan, manifest: M, state: () => state };

  // ---- start ---------------------------------------------------------------------------
  if (!storageOk) $("storage-warning").hidden = false;
  if (state && state.test_id === M.test_id && Array.isArray(state.plan)) {
    if (state.finished || state.pos >= state.plan.length) showDone(false);
    else showItem(true);
  } else {
    state = null;
    showIntro();
  }
})();
