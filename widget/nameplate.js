/* Nameplate chat widget — talk to a real, named person.
 *   <script src="https://HOST/widget.js" data-site="SITE_KEY" async></script>
 *   Options: data-accent="#1d5c4b" data-position="left|right" data-greeting="…" data-title="…"
 *   API: Nameplate.open(), .close(), .identify({user_id, user_hash, name, email, attributes}), .reset();
 *   queued before the script loads: window.Nameplate = {q: [["identify", {...}]]}.
 * One custom element in a shadow root; the only global is window.Nameplate. Nothing reaches the page
 * before the server's hello (a server that is down costs one console.warn); people's text reaches the
 * DOM only as textContent.
 */
(() => {
  "use strict";
  const W = window;
  const script = document.currentScript;
  if (W.Nameplate?.version) return; // the tag is on the page twice
  const early = Array.isArray(W.Nameplate?.q) ? W.Nameplate.q : [];
  let warned = false;
  const warn = (text) => { if (!warned) { warned = true; try { console.warn("Nameplate chat: " + text); } catch { /* no console */ } } };
  const SITE = script?.dataset.site;
  if (!SITE || !script.src) {
    W.Nameplate = { version: "0", open() {}, close() {}, identify() {}, reset() {} };
    warn("the script tag needs src and data-site");
    return;
  }
  let wantOpen = false;
  const api = { version: "1", open() { wantOpen = true; open(true); }, close() { wantOpen = false; close(); }, identify, reset };
  W.Nameplate = api;

  // -- configuration
  const ORIGIN = new URL(script.src, location.href).origin; // captured now: currentScript is null later
  const WS_URL = ORIGIN.replace(/^http/, "ws") + "/ws/visitor";
  const LEFT = script.dataset.position === "left";
  const TITLE = script.dataset.title || "Chat with our team";
  const GREETING = script.dataset.greeting || "Hi! Ask us anything — a real person from our team will answer.";
  const MAX_CHARS = 4000; // the server's default max_message_chars
  const TYPING_EVERY_MS = 2000; // enough for the dots on the agent's side
  const TYPING_IDLE_MS = 3000;
  const TYPING_SHOWN_MS = 8000; // an agent's "typing…" never switched off fades
  const PING_EVERY_MS = 25000; // below the 30–60 s idle timeouts of common proxies
  const PONG_WAIT_MS = 10000; // silent this long after a ping: dead, even if open
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const CLOSE_UNAUTHORIZED = 4401;

  // -- persistent state (localStorage)
  const KEY = "nameplate:" + SITE;
  let S;
  try { S = JSON.parse(localStorage.getItem(KEY)) || {}; } catch { S = {}; }
  if (!Array.isArray(S.outbox)) S.outbox = [];
  S.seen_seq = +S.seen_seq || 0;
  const save = () => { try { localStorage.setItem(KEY, JSON.stringify(S)); } catch { /* storage off */ } };

  // -- session state
  let conv = S.conversation_id || null;
  let lastSeq = 0; // a fresh page asks for the whole history
  let status = null; // queued | active | closed | null
  let agent = null, agentsOnline = null, queue = null, agentReadSeq = 0, readSent = 0, score = 0;
  // dropped: the agent_dropped frame while the agent's connection is down (the chat is still theirs)
  let dropped = null;
  // earlier: a verified customer's closed conversations; past: the one on screen
  let earlier = [], verified = false, past = null, asked = null, teams = [];
  // ready: welcomed, replay over (our first ping is answered); lost: "Reconnecting…"; dead: gave up
  let ws = null, ready = false, everWelcomed = false, lost = false, dead = false;
  let attempts = 0, tokenRetries = 0, retryTimer = null, heartbeat = null, lastFrameAt = 0, lastError = null;
  let lastPage = null, typingOn = false, typingSentAt = 0, typingTimer = null, agentTypingTimer = null;
  const bySeq = new Map(), byClient = new Map();

  // -- DOM
  let host = null, root = null;
  const $ = {};
  const icon = (size, path, cls = "") => `<svg class="${cls}" viewBox="0 0 24 24" width="${size}" height="${size}" fill="currentColor" aria-hidden="true"><path ${path}/></svg>`;
  const X_PATH = 'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" d="M6 6l12 12M18 6L6 18"';
  // Static markup only: nothing a person typed goes through this string.
  const HTML = `<div class="root${LEFT ? " left" : ""}">
<button class="launcher" aria-expanded="false" aria-controls="np-panel">${icon(26, 'd="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-4.3 3.4A.8.8 0 0 1 3.4 20.8V18H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z"')}${icon(22, X_PATH, "shut")}<span class="badge" aria-hidden="true" hidden></span></button>
<section class="panel" id="np-panel" role="dialog" aria-labelledby="np-title" hidden>
 <div class="head"><div class="ht"><h2 class="title" id="np-title"></h2><p class="sub"></p></div>
  <button class="x" aria-label="Close chat">${icon(20, X_PATH)}</button></div>
 <div class="card" hidden><img class="photo" alt=""><span class="mono" aria-hidden="true" hidden></span>
  <div class="ct"><p class="lead"></p><p class="name"></p><p class="job"></p><p class="intro"></p></div></div>
 <div class="banner" hidden></div>
 <div class="offer" role="group" aria-labelledby="np-offer" hidden><p class="otext" id="np-offer"></p>
  <button class="btn owait"></button><button class="btn ghost onext">Talk to the next available person</button></div>
 <div class="list" role="log" aria-live="off" aria-label="Conversation" tabindex="0"><div class="past" hidden></div><p class="greet"></p></div>
 <p class="typing" hidden></p>
 <form class="email" hidden novalidate><div class="ask"><label for="np-email">Your email address, for our reply</label>
  <div class="row"><input class="addr" id="np-email" type="email" autocomplete="email" maxlength="254" placeholder="you@example.com" required><button class="btn">Save</button></div></div>
  <p class="note" aria-live="polite"></p></form>
 <div class="end" hidden><p class="endtext">This conversation has ended. Thank you for chatting with us.</p>
  <fieldset class="rate"><legend>How was this conversation?</legend><div class="stars"></div><div class="more" hidden>
   <label for="np-comment">Anything to add? (optional)</label><textarea class="comment" id="np-comment" rows="2" maxlength="2000"></textarea>
   <button class="btn rsend">Send rating</button></div></fieldset>
  <p class="rated" hidden>Thank you for your rating.</p>
  <form class="tm" novalidate><label for="np-tm">E-mail me this transcript</label><div class="row"><input class="ta" id="np-tm" type="email" maxlength="254"><button class="btn">Send</button></div><p class="tn" aria-live="polite"></p></form>
  <button class="btn ghost new">Start a new conversation</button></div>
 <div class="topic" hidden><label for="np-team">What is it about?</label><select class="team" id="np-team"><option value="">Choose (optional)</option></select></div>
 <form class="composer"><label class="sr" for="np-input">Your message</label>
  <textarea class="input" id="np-input" rows="1" maxlength="${MAX_CHARS}" placeholder="Write a message…" aria-describedby="np-hint"></textarea>
  <button class="send" aria-label="Send message">${icon(20, 'd="M3.4 20.4l17.5-7.5a1 1 0 0 0 0-1.8L3.4 3.6a.8.8 0 0 0-1.1.9L4 11l9 1-9 1-1.7 6.5a.8.8 0 0 0 1.1.9z"')}</button></form>
 <p class="sr" id="np-hint">Enter sends, Shift+Enter starts a new line.</p>
 <div class="sr live" role="status"></div>
</section></div>`;
  const STYLE = `:host{all:initial}
.root{all:initial;--a:#1d5c4b;--at:#fff;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1c2128}
.root *{box-sizing:border-box;margin:0;padding:0;border:0;font:inherit;color:inherit;background:none}
[hidden]{display:none!important}
.launcher,.x,.mono,.av,.send,.btn{display:flex;align-items:center;justify-content:center}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%);white-space:nowrap}
button{cursor:pointer}
button:focus-visible,.list:focus-visible{outline:none;box-shadow:0 0 0 2px #fff,0 0 0 4px #1d4ed8}
.launcher,.head,.send,.btn,.me .bubble,.star[aria-pressed=true]{background:var(--a);color:var(--at)}
.launcher{position:relative;width:56px;height:56px;border-radius:50%;box-shadow:0 6px 20px rgba(16,24,40,.25)}
.launcher:hover{filter:brightness(1.08)}
.shut,.open .launcher svg{display:none}.open .launcher .shut{display:block}
.badge{position:absolute;top:-3px;right:-3px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#c4281c;color:#fff;font-size:12px;font-weight:700;line-height:18px;text-align:center;border:2px solid #fff}
.panel{position:fixed;bottom:92px;right:20px;width:380px;height:min(640px,calc(100vh - 112px));min-height:360px;display:flex;flex-direction:column;overflow:hidden;background:#fff;border-radius:16px;border:1px solid rgba(16,24,40,.08);box-shadow:0 16px 48px rgba(16,24,40,.2)}
.left .panel{left:20px;right:auto}
.head{display:flex;align-items:center;gap:12px;padding:16px 12px 16px 20px}
.ht,.ct,.col{min-width:0}.ht{flex:1}
.title,.name{font-size:16px;font-weight:650;line-height:1.3}
.sub{font-size:13px;opacity:.92;margin-top:2px}
.x{width:36px;height:36px;border-radius:8px}
.x:hover{background:#ffffff29}
.card,.offer,.email,.end{background:#f7f8fa}.card,.offer{border-bottom:1px solid #e7eaee}.email,.end,.topic,.composer{border-top:1px solid #e7eaee}
.card{display:flex;align-items:center;gap:16px;padding:16px 20px}
.photo,.mono,.av{flex:none;border-radius:50%;object-fit:cover;background:#dde2e8;font-weight:600;color:#33404f}
.photo,.mono{width:72px;height:72px;box-shadow:0 0 0 3px #fff,0 0 0 4px #d9dee5}.mono{font-size:22px}
.lead,.meta,.typing,.sys{font-size:12px;color:#596372}
.name{color:#151a21}
.job,.intro,.otext,.note,.who{font-size:13px;color:#3f4a57}
.intro{margin-top:4px;line-height:1.4}
.small{padding:10px 20px}.small .photo,.small .mono{width:44px;height:44px;font-size:16px}.small .intro{display:none}
.banner{padding:10px 20px;font-size:13px;line-height:1.4;background:#eef3f8;color:#1f2d3d;border-bottom:1px solid #e1e7ee}
.banner.warn{background:#fff6e0;color:#5c3d00;border-color:#f3e2b3}
.offer .btn{height:auto;min-height:40px;padding:8px 12px;white-space:normal}
.list,.past,.col{display:flex;flex-direction:column}
.list{flex:1;min-height:0;overflow-y:auto;overscroll-behavior:contain;padding:12px 16px 8px}
.past{padding-bottom:12px;border-bottom:1px dashed #c9d0d8}.past .msg+.msg{opacity:.75}
.past .sys:first-child{position:sticky;top:0;z-index:1;padding:2px 10px;border-radius:9px;background:#eef0f3}
.greet{padding:12px 8px 8px;text-align:center;color:#2b3440}
.msg{display:flex;max-width:82%;margin-top:3px}
.first{margin-top:14px}
.me{align-self:flex-end}
.agent{align-self:flex-start;gap:8px}
.sys{align-self:center;max-width:90%;margin:12px 0 2px;text-align:center}
.me .col{align-items:flex-end}
.av{width:32px;height:32px;visibility:hidden;align-self:flex-start;margin-top:18px;font-size:12px}
.who{font-size:12px;font-weight:600;margin:0 4px 3px;display:none}
.first .av{visibility:visible}.first .who{display:block}
.bubble{padding:9px 13px;border-radius:16px;white-space:pre-wrap;overflow-wrap:anywhere}
.me .bubble{border-bottom-right-radius:6px}
.agent .bubble{background:#eef0f3;color:#151a21;border-bottom-left-radius:6px}
.pending .bubble{opacity:.7}
.meta{font-size:11.5px;margin:3px 4px 0}
[data-state=failed] .meta{color:#b42318}
.retry{font-weight:600;text-decoration:underline}
.typing{padding:2px 20px 8px 56px;font-size:12.5px;font-style:italic}
.offer,.email,.end{padding:12px 16px 14px}
.root label,.rate legend{display:block;font-size:12.5px;font-weight:600;color:#2b3440;margin-bottom:6px}
.row,.topic{display:flex;gap:8px}
.root input,.root textarea,.root select{display:block;background:#fff;border:1px solid #b9c0ca;border-radius:10px;line-height:20px;resize:none}
.root input,.root select{flex:1;min-width:0;height:40px;padding:0 12px}
.btn,.star{height:40px;border-radius:10px;font-weight:600}.btn{display:inline-flex;padding:0 16px;white-space:nowrap}
.ghost,.star{background:#fff;color:#1c2128;border:1px solid #b9c0ca}
.ghost,.offer .btn{width:100%;margin-top:10px}
.note{margin-top:6px}.note:empty{display:none}.tm{margin:10px 0}.tm label{display:block}
.endtext,.rated{font-size:13.5px;color:#2b3440;margin-bottom:10px}
.rate textarea{width:100%;padding:8px 12px;margin-bottom:8px}
.stars{display:flex;gap:6px;margin-bottom:10px}
.star{width:44px}
.star[aria-pressed=true]{border-color:transparent}
.rated{color:#1f5130;font-weight:600;margin:0}
.topic{align-items:center;padding:10px 12px 0}.topic label{margin:0;white-space:nowrap}
.composer{display:flex;align-items:flex-end;gap:8px;padding:10px 12px 12px}
.topic:not([hidden])+.composer{border:0}
.composer textarea{flex:1;min-width:0;min-height:42px;max-height:128px;padding:10px 14px;overflow-y:auto}
.root :is(textarea,input,select):focus{outline:none;border-color:var(--a);box-shadow:0 0 0 3px color-mix(in srgb,var(--a) 22%,transparent)}
.send{flex:none;width:42px;height:42px;border-radius:50%}
@media (max-width:480px){.panel{inset:0;width:auto;height:auto;min-height:0;border-radius:0;border:0}.open .launcher{display:none}}
@media (prefers-reduced-motion:no-preference){.panel{animation:np-in .18s ease-out}@keyframes np-in{from{opacity:0;transform:translateY(8px)}}}`;
  // Inline and !important: no rule of the host page can hide, move or shrink it.
  const HOST_STYLE = "all:initial!important;display:block!important;position:fixed!important;z-index:2147483000!important;" +
    "bottom:20px!important;" + (LEFT ? "left" : "right") + ":20px!important";

  const put = (node, text) => { node.textContent = text || ""; node.hidden = !text; };
  const on = (node, type, fn) => node.addEventListener(type, fn);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  };
  const button = (cls, text, fn) => { const b = el("button", cls, text); on(b, "click", fn); return b; };
  const initials = (name) => (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0]).join("").toUpperCase();
  const photoUrl = (url) => {
    try {
      const u = new URL(url, ORIGIN); // relative to the server, not to the host page
      return url && /^https?:$/.test(u.protocol) ? u.href : null;
    } catch { return null; }
  };
  function avatar(a) {
    const src = photoUrl(a.photo_url);
    const fallback = () => el("span", "av", initials(a.name));
    if (!src) return fallback();
    const img = el("img", "av");
    img.alt = "";
    img.onerror = () => img.replaceWith(fallback());
    img.src = src;
    return img;
  }
  // White text on the accent only when it reads well (contrast ≥ 4.5).
  function accentColours(value) {
    try {
      if (!value || !W.CSS.supports("color", value)) return null;
      const ctx = document.createElement("canvas").getContext("2d");
      ctx.fillStyle = value;
      const m = /^#(..)(..)(..)$/.exec(ctx.fillStyle);
      if (!m) return [value, "#fff"];
      const [r, g, b] = m.slice(1).map((h) => (h = parseInt(h, 16) / 255) <= 0.03928 ? h / 12.92 : ((h + 0.055) / 1.055) ** 2.4);
      return [ctx.fillStyle, 1.05 / (0.2126 * r + 0.7152 * g + 0.0722 * b + 0.05) >= 4.5 ? "#fff" : "#111"];
    } catch { return null; }
  }

  function mount() {
    if (host) return;
    const TAG = "nameplate-chat";
    if (!customElements.get(TAG)) customElements.define(TAG, class extends HTMLElement {});
    host = document.createElement(TAG);
    host.setAttribute("style", HOST_STYLE);
    root = host.shadowRoot || host.attachShadow({ mode: "open" });
    root.innerHTML = "<style>" + STYLE + "</style>" + HTML;
    for (const name of ("root launcher badge panel title sub x card photo mono lead name job intro banner offer otext owait onext " +
      "list past greet typing email ask addr note end rate stars more comment rsend rated new topic team composer input live " +
      "tm ta tn")
      .split(" ")) $[name] = root.querySelector("." + name);
    const colours = accentColours(script.dataset.accent);
    if (colours) $.root.style.cssText = "--a:" + colours[0] + ";--at:" + colours[1];
    $.title.textContent = TITLE;
    $.greet.textContent = GREETING;
    for (let n = 1; n <= 5; n++) {
      const star = button("star", n, () => {
        score = n;
        for (const s of $.stars.children) s.setAttribute("aria-pressed", s === star);
        $.more.hidden = false;
      });
      star.setAttribute("aria-pressed", "false");
      star.setAttribute("aria-label", n + " out of 5");
      $.stars.append(star);
    }
    const submitted = (form, fn) => on(form, "submit", (e) => { e.preventDefault(); fn(); });
    on($.launcher, "click", () => ($.panel.hidden ? open(true) : close()));
    on($.x, "click", close);
    on($.list, "scroll", () => { stuck = $.list.scrollHeight - $.list.scrollTop - $.list.clientHeight < 80; });
    if (W.ResizeObserver) new ResizeObserver(() => stuck && scrollDown()).observe($.list); // forms come and go
    on($.panel, "keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); close(); } });
    // Escape anywhere on the page closes the open chat too, unless the page used that Escape itself.
    on(document, "keydown", (e) => { if (e.key === "Escape" && !e.defaultPrevented && !$.panel.hidden) close(); });
    submitted($.composer, submit);
    submitted($.email, saveEmail);
    submitted($.tm, mailTranscript);
    on($.input, "keydown", (e) => { if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); } });
    on($.input, "input", () => { autosize(); typing(); });
    on($.rsend, "click", () => {
      if (score && send({ type: "rate", score, comment: $.comment.value.trim().slice(0, 2000), conversation_id: conv })) $.more.hidden = true;
    });
    on($.new, "click", () => { resetView(null); S.rated = null; save(); render(); $.input.focus(); });
    for (const wait of [true, false]) on(wait ? $.owait : $.onext, "click", () => {
      if (send({ type: "choose", wait })) { S.offer = null; save(); render(); $.input.focus(); }
    });
    document.documentElement.appendChild(host); // survives frameworks that swap <body>
    on(document, "visibilitychange", () => {
      markSeen();
      if (retryTimer && !document.hidden) reconnect();
    });
    watchNavigation();
    for (const item of S.outbox) if (!byClient.has(item.client_id)) pendingMessage(item);
    if (wantOpen || S.open) open(wantOpen);
  }

  // -- messages
  function msgNode(m) {
    const a = m.author || {};
    const kind = a.kind === "agent" ? "agent" : a.kind === "system" ? "sys" : "me";
    const node = el("div", "msg " + kind);
    const rec = node._np = { seq: m.seq || 0, cid: m.client_id || null, kind, at: m.sent_at, node,
      who: kind === "me" ? kind : kind + ":" + (a.id || a.name) };
    if (kind === "sys") node.append(m.body);
    else {
      const col = el("div", "col");
      if (kind === "agent") { node.append(avatar(a)); col.append(el("div", "who", a.name || "")); }
      col.append(el("div", "bubble", m.body), rec.meta = el("div", "meta"));
      node.append(col);
    }
    return rec;
  }
  function addMessage(m) {
    const rec = msgNode(m);
    if (rec.seq) bySeq.set(rec.seq, rec); else rec.node.classList.add("pending");
    if (rec.cid) byClient.set(rec.cid, rec);
    place(rec);
    paint(rec);
  }
  const pendingMessage = (item) => addMessage({ client_id: item.client_id, body: item.body, sent_at: item.at, author: {} });
  // Stored messages in seq order; those still on their way at the end.
  function place(rec) {
    let before = null;
    if (rec.seq) for (const node of $.list.children) {
      const r = node._np;
      if (r && r !== rec && (!r.seq || r.seq > rec.seq)) { before = node; break; }
    }
    if (rec.node.nextSibling !== before || rec.node.parentNode !== $.list) $.list.insertBefore(rec.node, before);
    group($.list);
  }
  // Name and photo once per run of messages.
  function group(box) {
    let prev = null;
    for (const node of box.children) {
      const r = node._np;
      if (!r) continue;
      node.classList.toggle("first", !prev || prev.who !== r.who || r.kind === "sys");
      prev = r;
    }
    if (stuck) scrollDown();
  }
  // An earlier conversation: read-only, dated, above the new one.
  function showPast(f) {
    const m = f.messages || [];
    const add = (rec) => { if (rec.meta) rec.meta.textContent = when(rec.at); $.past.append(rec.node); };
    past = { id: f.conversation_id };
    $.past.textContent = "";
    add(msgNode({ author: { kind: "system" }, body: "Earlier conversation" +
      (m[0] ? " · " + new Date(m[0].sent_at).toLocaleDateString(undefined, { dateStyle: "medium" }) : "") }));
    for (const x of m) if (!x.private) add(msgNode(x));
    render();
    group($.past);
  }
  let stuck = true; // follows new messages unless scrolled up
  const scrollDown = () => { $.list.scrollTop = $.list.scrollHeight; };
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  function when(iso) {
    const d = new Date(iso || Date.now());
    if (isNaN(d)) return "";
    const today = d.toDateString() === new Date().toDateString();
    return (today ? "" : d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + ", ") + timeFormat.format(d);
  }
  function paint(rec) {
    if (!rec.meta) return;
    const f = rec.failed;
    let text = when(rec.at);
    if (rec.kind === "me") {
      const state = rec.node.dataset.state = f ? "failed" : !rec.seq ? "pending" : rec.seq <= agentReadSeq ? "read" : "sent";
      text += " · " + (f ? "Not sent: " + f.message : !rec.seq ? (ready ? "Sending…" : "Not sent yet — waiting for the connection")
        : state === "read" ? "Read" : "Sent");
    }
    rec.meta.textContent = text;
    if (f?.code === "rate_limited") {
      rec.meta.append(" ", button("retry", "Retry", () => {
        const item = S.outbox.find((i) => i.client_id === rec.cid);
        if (item) sendItem(item);
      }));
    }
  }
  function confirm(rec, seq, at) {
    if (rec.seq) return;
    bySeq.set(rec.seq = seq, rec);
    rec.failed = null;
    rec.at = at || rec.at;
    rec.node.classList.remove("pending");
    place(rec);
    paint(rec);
  }
  const dropOutbox = (cid) => { S.outbox = S.outbox.filter((item) => item.client_id !== cid); save(); };
  function markSeen() {
    if (!host) return;
    const looking = !$.panel.hidden && !document.hidden;
    if (looking && lastSeq > S.seen_seq) { S.seen_seq = lastSeq; save(); }
    if (ready && conv && looking && lastSeq > readSent) send({ type: "read", seq: readSent = lastSeq });
    const n = $.panel.hidden ? [...bySeq.values()].filter((r) => r.kind === "agent" && r.seq > S.seen_seq).length : 0;
    $.badge.hidden = !n;
    $.badge.textContent = n > 9 ? "9+" : n;
    $.launcher.setAttribute("aria-label", $.panel.hidden ? "Open chat" + (n ? ", " + n + " unread" : "") : "Close chat");
  }
  function announce(text) {
    if (!host) return;
    $.live.textContent = ""; // then a fresh change: the same words are read again
    setTimeout(() => { $.live.textContent = text; }, 60);
  }

  // Another conversation: forget what is on screen but messages on their way.
  function resetView(id) {
    if (id && !conv && past) past.next = id; // begun under an earlier one: it stays
    for (const rec of bySeq.values()) rec.node.remove();
    bySeq.clear();
    for (const [cid, rec] of byClient) if (rec.seq) byClient.delete(cid);
    conv = S.conversation_id = id;
    lastSeq = readSent = agentReadSeq = S.last_seq = S.seen_seq = 0;
    status = id ? "queued" : null;
    agent = queue = dropped = S.offer = null;
    save();
  }

  // -- rendering of the state
  // The wait's wording comes from the server (routing/wait_time.py), the same sentence the console shows.
  const queueText = (q) => (q.position === 1 ? "You are next in line" : "You are number " + q.position + " in line") +
    (q.expected_wait_s != null && q.wait_text ? " — " + q.wait_text : "");
  function render() {
    if (!host) return;
    const closed = status === "closed";
    const nobody = agentsOnline === 0 && status !== "active" && !closed;
    const saved = S.email_saved?.conv === conv && conv;
    const cont = !conv && earlier.find((c) => c.agent);
    const who = agent || cont?.agent;
    const offer = status === "queued" && S.offer?.conversation_id === conv && S.offer;
    const down = status === "active" && dropped;
    put($.banner, lost ? "Reconnecting… Your messages are kept and will be sent when we're back."
      : down ? dropped.text
      : nobody ? "No one is online right now. " + (saved ? "We'll answer by email as soon as someone is back."
        : "Leave your message and your email address, and we'll answer by email.")
      : status === "queued" && !offer ? (queue ? queueText(queue) : "Waiting for the next available person…") : "");
    $.banner.classList.toggle("warn", lost || nobody || !!down);
    $.sub.textContent = lost ? "Connection lost" : down ? (agent?.given_name || "Your agent") + " is reconnecting…"
      : agent && status === "active" ? (agent.given_name || agent.name) + " is here to help"
      : agentsOnline ? agentsOnline + (agentsOnline > 1 ? " people" : " person") + " online now" : agentsOnline === 0 ? "No one online right now" : "";
    $.card.hidden = !who;
    if (who) {
      const src = photoUrl(who.photo_url);
      $.photo.hidden = !src;
      if (src && $.photo.getAttribute("src") !== src) $.photo.src = src;
      $.photo.alt = "Photo of " + who.name;
      put($.mono, src ? "" : initials(who.name));
      $.lead.textContent = cont ? "Welcome back" : closed ? "You chatted with" : "You're chatting with";
      $.card.classList.toggle("small", closed);
      $.name.textContent = cont ? "Continue with " + who.name + "?" : who.name;
      put($.job, who.title);
      put($.intro, who.intro);
    }
    if (cont && past?.id !== cont.id && asked !== cont.id && ready && send({ type: "history", conversation_id: cont.id })) {
      asked = cont.id;
    }
    $.past.hidden = !past || (conv ? past.next !== conv : cont?.id !== past.id);
    // Their previous agent is busy: wait, or the next person?
    $.offer.hidden = !offer;
    if (offer) {
      const name = offer.agent?.name || "Your previous agent";
      $.otext.textContent = name + " is with other customers right now.";
      $.owait.textContent = offer.wait_text || "Wait for " + name; // worded by the server (routing/wait_time.py)
    }
    $.topic.hidden = !teams.length || !!conv;
    $.email.hidden = !(nobody || (saved && status !== "active" && !closed));
    $.ask.hidden = !!saved;
    $.note.textContent = saved ? "Thanks — we'll reply to " + S.email_saved.email + "."
      : S.pending_email ? "We'll save " + S.pending_email + " as soon as you send your message." : "";
    // Closed: a rating, a new start; never written into again.
    $.end.hidden = !closed;
    $.composer.hidden = closed;
    $.rate.hidden = !($.rated.hidden = S.rated !== conv);
    for (const rec of byClient.values()) if (!rec.seq) paint(rec);
    markSeen();
  }

  // -- opening and closing
  function show(visible) {
    $.panel.hidden = !(S.open = visible);
    $.root.classList.toggle("open", visible);
    $.launcher.setAttribute("aria-expanded", visible);
    save();
    markSeen();
  }
  function open(focus) {
    if (!host) return;
    show(true);
    scrollDown();
    if (focus) ($.composer.hidden ? ($.rate.hidden ? $.new : $.stars.firstChild) : $.input).focus();
  }
  function close() {
    if (!host || $.panel.hidden) return;
    const inside = !!root.activeElement;
    show(false);
    if (inside) $.launcher.focus();
  }
  const autosize = () => {
    $.input.style.height = "auto";
    $.input.style.height = Math.min($.input.scrollHeight + 2, 128) + "px";
  };

  // -- sending
  function send(frame) {
    if (ws?.readyState !== 1) return false;
    try { ws.send(JSON.stringify(frame)); return true; } catch { return false; }
  }
  const newId = () => W.crypto?.randomUUID?.() || Date.now().toString(36) + Math.random().toString(36).slice(2);
  function submit() {
    const body = $.input.value.trim().slice(0, MAX_CHARS);
    if (!body || status === "closed") return;
    // Kept until acknowledged, across reloads; a first message names the topic.
    const item = { client_id: newId(), body, at: new Date().toISOString(), team_id: (!conv && $.team.value) || undefined };
    S.outbox.push(item);
    save();
    $.input.value = "";
    autosize();
    stopTyping();
    pendingMessage(item);
    scrollDown();
    if (ready) sendItem(item);
  }
  function sendItem(item) {
    const rec = byClient.get(item.client_id);
    if (rec?.failed) { rec.failed = null; paint(rec); }
    send({ type: "message", client_id: item.client_id, body: item.body, team_id: item.team_id });
  }
  // The unacknowledged, with their client_id: the server stores each once.
  function flush() {
    for (const item of S.outbox) {
      if (byClient.get(item.client_id)?.seq) dropOutbox(item.client_id);
      else sendItem(item);
    }
    emailDue();
  }
  const emailDue = () => S.pending_email && conv && send({ type: "email", email: S.pending_email });
  function typing() {
    if (!ready || !conv || status === "closed") return;
    const now = Date.now();
    if (now - typingSentAt >= TYPING_EVERY_MS && $.input.value.trim()) {
      typingSentAt = now;
      typingOn = send({ type: "typing", on: true }) || typingOn;
    }
    clearTimeout(typingTimer);
    typingTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }
  function stopTyping() {
    clearTimeout(typingTimer);
    if (typingOn) { typingOn = false; typingSentAt = 0; send({ type: "typing", on: false }); }
  }
  function saveEmail() {
    const email = $.addr.value.trim();
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email) || email.length > 254) {
      $.note.textContent = "Please enter an email address like name@example.com.";
      $.addr.setAttribute("aria-invalid", "true");
      $.addr.focus();
      return;
    }
    $.addr.removeAttribute("aria-invalid");
    save(S.pending_email = email); // sent with the first message
    if (ready) emailDue();
    render();
  }
  // Connected: `identify` (answered by `identified`); else the next hello carries it.
  function identify(who) {
    if (!who || typeof who !== "object") return;
    const pick = {};
    for (const k of "user_id user_hash name email attributes".split(" ")) if (who[k] != null) pick[k] = who[k];
    if (JSON.stringify(pick) === JSON.stringify(S.identify || null)) return;
    save(S.identify = pick);
    send({ type: "identify", ...pick });
  }
  // The site's sign-out: forget this browser's visitor (token, identity, chat, outbox), start anonymous.
  function reset() {
    const sock = ws;
    ws = asked = past = lastPage = null;
    ready = verified = false;
    earlier = [];
    attempts = tokenRetries = 0;
    clearInterval(heartbeat);
    clearTimeout(retryTimer);
    retryTimer = null;
    if (sock) { sock.onclose = sock.onmessage = null; try { sock.close(); } catch { /* gone */ } }
    try { localStorage.removeItem(KEY); } catch { /* storage off */ }
    S = { outbox: [], seen_seq: 0 };
    for (const rec of byClient.values()) rec.node?.remove();
    byClient.clear();
    if (host) $.past.textContent = "";
    resetView(null);
    if (host) render();
    if (!dead) reconnect();
  }
  // A token: identify made this visitor another customer record.
  function customer(f) {
    if (typeof f.token === "string") { S.token = f.token; save(); }
    verified = !!f.customer?.verified;
    earlier = f.earlier || [];
  }
  function reportPage() {
    const url = location.href;
    if (!ready || url === lastPage) return;
    lastPage = url;
    send({ type: "page", url: url.slice(0, 2000), title: document.title.slice(0, 300) });
  }
  // Single-page apps change the title after the URL.
  const navigated = () => setTimeout(reportPage, 300);
  function watchNavigation() {
    on(W, "popstate", navigated);
    on(W, "hashchange", navigated);
    for (const name of ["pushState", "replaceState"]) {
      const original = history[name];
      if (typeof original !== "function" || original.__nameplate) continue;
      const wrapped = function () { navigated(); return original.apply(this, arguments); };
      wrapped.__nameplate = true;
      try { history[name] = wrapped; } catch { /* frozen history */ }
    }
  }

  async function mailTranscript() { // server/mail
    const email = $.ta.value.trim() || S.email_saved?.email;
    const res = await fetch(ORIGIN + "/api/v1/transcript-mail", { method: "POST", credentials: "omit",
      body: JSON.stringify({ site: SITE, token: S.token, conversation_id: conv, email }) }).catch(() => null);
    const data = await res?.json().catch(() => ({}));
    $.tn.textContent = res?.ok ? "Sent to " + data.sent_to + "." : data?.error?.message || "Could not send it.";
  }

  // -- the connection
  async function getToken() {
    const res = await fetch(ORIGIN + "/api/v1/visitors", { method: "POST", credentials: "omit",
      headers: { "Content-Type": "text/plain" }, body: JSON.stringify({ site: SITE }) }); // text/plain: no preflight
    const data = res.ok && await res.json();
    if (typeof data?.token !== "string") { // 4xx will not get better by retrying; 5xx and 429 may
      throw Object.assign(new Error("token request: HTTP " + res.status), { permanent: /^4(?!29)/.test(res.status) });
    }
    S.token = data.token;
    save();
  }
  const reconnect = () => connect().catch((error) => warn(String(error))); // never an unhandled rejection
  async function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    if (dead || ws) return;
    if (!S.token) {
      try { await getToken(); } catch (error) { return fail("the chat server is unreachable (" + error.message + ")", error.permanent); }
      if (dead || ws) return;
    }
    let sock;
    try { sock = new WebSocket(WS_URL); } catch (_) { return fail("the websocket could not be opened", true); }
    ws = sock;
    lastError = null;
    sock.onopen = () => {
      send({ type: "hello", site: SITE, token: S.token, conversation_id: conv, resume_after: conv ? lastSeq : 0,
        locale: navigator.language || null, timezone: timeFormat.resolvedOptions().timeZone || null, identify: S.identify || undefined });
      send({ type: "ping" }); // its pong comes after the whole replay: then the outbox goes out
    };
    sock.onmessage = (event) => {
      if (ws !== sock) return;
      lastFrameAt = Date.now();
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      try { onFrame(frame); } catch (error) { warn("could not handle a " + frame.type + " frame: " + error); }
    };
    sock.onclose = (event) => { if (ws === sock) closed(event.code); };
  }
  function closed(code) {
    ws = asked = null;
    ready = false;
    clearInterval(heartbeat);
    if (code === CLOSE_UNAUTHORIZED) {
      if (lastError === "bad_token" && tokenRetries++ < 2) { S.token = null; save(); reconnect(); return; }
      return fail("the server refused the chat on this page (" + (lastError || code) + ")", true);
    }
    if (!everWelcomed) return fail("the chat server is unreachable", true);
    announce("Connection lost. Reconnecting…");
    fail();
  }
  function fail(reason, permanent) {
    ws = null;
    ready = false;
    if (!everWelcomed || permanent) {
      dead = true;
      warn(reason);
      if (host) { render(); put($.banner, "The chat is unavailable right now. Please try again later."); }
      return;
    }
    lost = true;
    render();
    schedule();
  }
  // Back-off with jitter: a restarted server is not hit by everyone at once.
  function schedule() {
    if (dead || retryTimer) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempts++);
    retryTimer = setTimeout(reconnect, ceiling / 2 + Math.random() * ceiling / 2);
  }
  on(W, "online", () => { if (retryTimer) reconnect(); });

  function onFrame(f) {
    const id = f.conversation_id;
    // Frames about a conversation this tab left behind change nothing.
    if (id && id !== conv && /^(queue|agent_|transferred|typing|read|closed|offer)/.test(f.type)) return;
    switch (f.type) {
      case "welcome": return welcome(f);
      case "message": return message(f);
      case "history": return id === asked && showPast(f);
      case "pong":
        if (ready || !ws) return;
        ready = true;
        flush();
        reportPage();
        break;
      case "identified":
        customer(f);
        if ((id || null) !== conv) resetView(id || null);
        break;
      case "ack": {
        if (id && id !== conv && (!conv || status === "closed")) resetView(id); // a new conversation, announced late
        const rec = byClient.get(f.client_id);
        if (rec && (!id || id === conv)) confirm(rec, f.seq);
        dropOutbox(f.client_id);
        emailDue();
        break;
      }
      case "conversation_started":
        if (id === conv) return;
        resetView(id);
        break;
      case "agents_online":
        agentsOnline = f.count;
        break;
      case "queue":
        agentsOnline = f.agents_online ?? agentsOnline;
        if (status !== "active" && queue?.position !== f.position) announce(queueText(f));
        queue = f;
        if (status !== "closed") status = "queued";
        break;
      case "offer":
        S.offer = f;
        save();
        render();
        return announce($.otext.textContent);
      case "agent_joined":
        status = "active";
        agent = f.agent || null;
        queue = dropped = S.offer = null;
        save();
        if (agent) announce("You're chatting with " + agent.name + (agent.title ? ", " + agent.title : ""));
        break;
      case "agent_left":
        announce((f.agent?.name || "Your agent") + " had to leave. You are back in line for the next person.");
        status = "queued";
        agent = dropped = null;
        break;
      case "agent_dropped": // the server's words, the same as the chat's system line
      case "agent_back":
        dropped = f.type === "agent_dropped" ? f : null;
        announce(f.text);
        break;
      case "transferred":
        announce((f.from || "Your agent") + " is handing you over to " + (f.to_agent || f.to_team || "a colleague") + ".");
        if (f.to_team) { status = "queued"; agent = dropped = null; }
        break;
      case "typing":
        if (f.by !== "agent") return;
        clearTimeout(agentTypingTimer);
        $.typing.hidden = !f.on || status === "closed";
        $.typing.textContent = (f.name || agent?.given_name || "Your agent") + " is typing…";
        if (f.on) agentTypingTimer = setTimeout(() => { $.typing.hidden = true; }, TYPING_SHOWN_MS);
        return;
      case "read":
        if (f.by !== "agent") return;
        agentReadSeq = Math.max(agentReadSeq, f.seq || 0);
        for (const rec of bySeq.values()) if (rec.kind === "me") paint(rec);
        return;
      case "closed":
        if (verified && agent) earlier.unshift({ id: conv, agent });
        status = "closed";
        dropped = null;
        $.typing.hidden = true;
        score = 0;
        announce("The conversation has ended.");
        break;
      case "email_saved":
        S.email_saved = { conv, email: f.email };
        S.pending_email = null;
        save();
        break;
      case "rated":
        S.rated = id;
        save();
        announce("Thank you for your rating.");
        break;
      case "error": {
        lastError = f.code;
        // The message an error is about failed; only a rate limit is worth a retry.
        const rec = f.client_id && byClient.get(f.client_id);
        if (rec && !rec.seq) {
          rec.failed = f;
          if (f.code !== "rate_limited") dropOutbox(f.client_id);
          paint(rec);
        } else if (f.code === "verification_required" || f.code === "invalid_attributes") {
          S.identify = null; // stays anonymous; the next hello does not ask again
          save();
          warn("identify was refused (" + f.code + "): " + f.message);
        }
        return;
      }
      default: return;
    }
    render();
  }
  function welcome(f) {
    everWelcomed = true;
    lost = false;
    dropped = null; // a reload mid-drop shows the drop's system line in the replayed chat, not the banner
    attempts = tokenRetries = 0;
    agentsOnline = f.agents_online ?? null;
    teams = f.teams || [];
    const c = f.conversation;
    if (!c ? conv : c.id !== conv) resetView(c ? c.id : null);
    mount();
    customer(f);
    const t = $.team, picked = t.value;
    t.length = 1;
    for (const team of teams) t.add(new Option(team.name, team.id));
    t.value = picked;
    if (c) {
      status = c.status;
      agent = c.status === "active" ? c.agent || null : c.status === "closed" ? c.agent || agent : null;
      agentReadSeq = Math.max(agentReadSeq, c.agent_read_seq || 0);
      if (c.status !== "queued") queue = null;
    }
    clearInterval(heartbeat);
    const sock = ws;
    heartbeat = setInterval(() => {
      if (ws !== sock) return clearInterval(heartbeat);
      if (Date.now() - lastFrameAt > PING_EVERY_MS + PONG_WAIT_MS) {
        sock.onclose = null;
        try { sock.close(); } catch { /* gone */ }
        return closed(1006);
      }
      send({ type: "ping" });
    }, PING_EVERY_MS);
    render();
  }
  function message(f) {
    if (f.private || f.conversation_id !== conv || !conv || bySeq.has(f.seq)) return;
    S.last_seq = lastSeq = Math.max(lastSeq, f.seq);
    const rec = f.client_id && byClient.get(f.client_id);
    if (rec) { confirm(rec, f.seq, f.sent_at); dropOutbox(f.client_id); }
    else {
      addMessage(f);
      if (f.author?.kind === "agent") {
        $.typing.hidden = true;
        if (f.seq > S.seen_seq) announce(f.author.name + ": " + f.body);
      }
    }
    save();
    markSeen();
  }

  for (const call of early) {
    try { if (Array.isArray(call) && typeof api[call[0]] === "function") api[call[0]](...call.slice(1)); } catch { /* ignore */ }
  }
  reconnect();
})();
