/* Nameplate chat widget — talk to a real, named person.
 *
 *   <script src="https://HOST/widget.js" data-site="SITE_KEY" async></script>
 *   Options: data-accent="#1d5c4b" data-position="left|right" data-greeting="…" data-title="…"
 *   API: Nameplate.open(), Nameplate.close(), Nameplate.identify({user_id, user_hash, name, email, attributes})
 *   Calls made before the script loads can be queued: window.Nameplate = {q: [["identify", {...}]]}.
 *
 * One custom element, <nameplate-chat>, with its own shadow root; the only global is window.Nameplate.
 * Nothing is put on the page until the server has said hello, so a server that is down costs the host
 * page nothing but one console.warn. People's text only ever reaches the DOM through textContent.
 */
(() => {
  "use strict";
  const W = window;
  const script = document.currentScript;
  if (W.Nameplate && W.Nameplate.version) return; // the tag is on the page twice
  const early = W.Nameplate && Array.isArray(W.Nameplate.q) ? W.Nameplate.q : [];
  let warned = false;
  const warn = (text) => {
    if (warned) return;
    warned = true;
    try { console.warn("Nameplate chat: " + text); } catch (_) { /* no console */ }
  };
  const SITE = script && script.dataset.site;
  if (!SITE || !script.src) {
    W.Nameplate = { version: "0", open() {}, close() {}, identify() {} };
    warn("the script tag needs src and data-site");
    return;
  }
  let wantOpen = false;
  const api = { version: "1", open() { wantOpen = true; open(true); }, close() { wantOpen = false; close(); },
    identify(who) { identify(who); } };
  W.Nameplate = api;

  // -- configuration
  const ORIGIN = new URL(script.src, location.href).origin; // captured now: currentScript is null later
  const WS_URL = ORIGIN.replace(/^http/, "ws") + "/ws/visitor";
  const TAG = "nameplate-chat";
  const LEFT = script.dataset.position === "left";
  const TITLE = script.dataset.title || "Chat with our team";
  const GREETING = script.dataset.greeting || "Hi! Ask us anything — a real person from our team will answer.";
  const MAX_CHARS = 4000; // the server's default max_message_chars
  const TYPING_EVERY_MS = 2000; // at most one typing frame per 2 s: enough for the dots on the agent's side
  const TYPING_IDLE_MS = 3000; // "stopped typing" 3 s after the last key
  const TYPING_SHOWN_MS = 8000; // an agent's "typing…" that is never switched off fades after 8 s
  const PING_EVERY_MS = 25000; // below the 30–60 s idle timeouts of common proxies
  const PONG_WAIT_MS = 10000; // a socket silent this long after a ping is dead, even if not closed
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 30000;
  const CLOSE_UNAUTHORIZED = 4401;

  // -- persistent state: localStorage, keyed by site
  const KEY = "nameplate:" + SITE;
  let S = {};
  try { S = JSON.parse(localStorage.getItem(KEY) || "{}") || {}; } catch (_) { S = {}; }
  if (!Array.isArray(S.outbox)) S.outbox = [];
  S.seen_seq = +S.seen_seq || 0;
  const save = () => { try { localStorage.setItem(KEY, JSON.stringify(S)); } catch (_) { /* storage off */ } };

  // -- session state
  let conv = S.conversation_id || null;
  let lastSeq = 0; // a fresh page has nothing on screen: it asks for the whole history, then resumes
  let status = null; // queued | active | closed | null (no conversation yet)
  let agent = null, agentsOnline = null, queue = null, agentReadSeq = 0, readSent = 0, score = 0;
  let ws = null;
  let ready = false; // welcomed, and the replay is over (the pong to our first ping came back)
  let everWelcomed = false;
  let lost = false; // the connection dropped after it had worked: "Reconnecting…"
  let dead = false; // gave up for this page view
  let attempts = 0, tokenRetries = 0, retryTimer = null, heartbeat = null, lastFrameAt = 0, lastError = null;
  let lastPage = null, typingOn = false, typingSentAt = 0, typingTimer = null, agentTypingTimer = null;
  const bySeq = new Map();
  const byClient = new Map();

  // -- DOM
  let host = null;
  let root = null;
  const $ = {};
  const icon = (size, path, cls = "") => `<svg class="${cls}" viewBox="0 0 24 24" width="${size}" height="${size}" ` +
    `aria-hidden="true" focusable="false"><path ${path}/></svg>`;
  const ICON_CHAT = icon(26, 'fill="currentColor" d="M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-4.3 3.4A.8.8 0 0 1 3.4 20.8V18H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2zm3 6.5a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01zm5 0a1.5 1.5 0 1 0 0 .01z"');
  const X_PATH = 'fill="none" stroke="currentColor" stroke-width="2" stroke-linecap="round" d="M6 6l12 12M18 6L6 18"';
  const ICON_SEND = icon(20, 'fill="currentColor" d="M3.4 20.4l17.5-7.5a1 1 0 0 0 0-1.8L3.4 3.6a.8.8 0 0 0-1.1.9L4 11l9 1-9 1-1.7 6.5a.8.8 0 0 0 1.1.9z"');
  // Static markup only: nothing a person typed ever goes through this string.
  const HTML = `<div class="root${LEFT ? " left" : ""}">
<button class="launcher" type="button" aria-expanded="false" aria-controls="np-panel">${ICON_CHAT}${icon(22, X_PATH, "shut")}<span class="badge" aria-hidden="true" hidden></span></button>
<section class="panel" id="np-panel" role="dialog" aria-labelledby="np-title" hidden>
 <header class="head"><div class="head-text"><h2 class="title" id="np-title"></h2><p class="sub"></p></div>
  <button class="x" type="button" aria-label="Close chat">${icon(20, X_PATH)}</button></header>
 <div class="card" hidden><img class="photo" alt=""><span class="mono" aria-hidden="true" hidden></span>
  <div class="card-text"><p class="lead"></p><p class="name"></p><p class="job"></p><p class="intro"></p></div></div>
 <div class="banner" hidden></div>
 <div class="list" role="log" aria-live="off" aria-label="Conversation" tabindex="0"><p class="greet"></p></div>
 <p class="typing" hidden></p>
 <form class="email" hidden novalidate><div class="ask"><label for="np-email">Your email address, for our reply</label>
  <div class="row"><input id="np-email" type="email" autocomplete="email" maxlength="254" placeholder="you@example.com" required><button class="btn" type="submit">Save</button></div></div>
  <p class="note" aria-live="polite"></p></form>
 <div class="end" hidden><p class="endtext"></p>
  <fieldset class="rate"><legend>How was this conversation?</legend><div class="stars"></div><div class="more" hidden>
   <label for="np-comment">Anything to add? (optional)</label><textarea id="np-comment" rows="2" maxlength="2000"></textarea>
   <button class="btn rsend" type="button">Send rating</button></div></fieldset>
  <p class="rated" hidden></p><button class="btn ghost new" type="button">Start a new conversation</button></div>
 <form class="composer"><label class="sr" for="np-input">Your message</label>
  <textarea id="np-input" rows="1" maxlength="${MAX_CHARS}" placeholder="Write a message…"></textarea>
  <button class="send" type="submit" aria-label="Send message">${ICON_SEND}</button></form>
 <p class="hint sr" id="np-hint">Enter sends, Shift+Enter starts a new line.</p>
 <div class="sr live" role="status" aria-live="polite"></div>
</section></div>`;
  const STYLE = `:host{all:initial}
.root{all:initial;--a:#1d5c4b;--at:#fff;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1c2128;-webkit-font-smoothing:antialiased}
.root *,.root *::before,.root *::after{box-sizing:border-box;margin:0;padding:0;border:0;font:inherit;color:inherit;background:none}
[hidden]{display:none!important}
.launcher,.x,.mono,.av,.send,.btn{display:flex;align-items:center;justify-content:center}
.sr{position:absolute!important;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
button{cursor:pointer}button:disabled{cursor:default;opacity:.55}
button:focus-visible,.list:focus-visible{outline:none;box-shadow:0 0 0 2px #fff,0 0 0 4px #1d4ed8}
.launcher{position:relative;width:56px;height:56px;border-radius:50%;background:var(--a);color:var(--at);box-shadow:0 6px 20px rgba(16,24,40,.22),0 1px 3px rgba(16,24,40,.2)}
.launcher:hover{filter:brightness(1.08)}
.launcher .shut,.open .launcher svg:first-child{display:none}.open .launcher .shut{display:block}
.badge{position:absolute;top:-3px;right:-3px;min-width:22px;height:22px;padding:0 6px;border-radius:11px;background:#c4281c;color:#fff;font-size:12px;font-weight:700;line-height:18px;text-align:center;border:2px solid #fff}
.panel{position:fixed;bottom:92px;right:20px;width:380px;height:min(640px,calc(100vh - 112px));min-height:360px;display:flex;flex-direction:column;overflow:hidden;background:#fff;border-radius:16px;border:1px solid rgba(16,24,40,.08);box-shadow:0 16px 48px rgba(16,24,40,.18),0 2px 8px rgba(16,24,40,.08)}
.left .panel{left:20px;right:auto}
.head{display:flex;align-items:center;gap:12px;padding:16px 12px 16px 20px;background:var(--a);color:var(--at)}
.head-text{flex:1;min-width:0}
.title{display:block;font-size:16px;font-weight:650;line-height:1.3}
.sub{font-size:13px;opacity:.92;margin-top:2px}
.x{width:36px;height:36px;border-radius:8px;color:inherit}
.x:hover{background:rgba(255,255,255,.16)}
.card{display:flex;align-items:center;gap:16px;padding:16px 20px;background:#f7f8fa;border-bottom:1px solid #e7eaee}
.photo,.mono{flex:none;width:72px;height:72px;border-radius:50%;object-fit:cover;background:#dde2e8;box-shadow:0 0 0 3px #fff,0 0 0 4px #d9dee5}
.mono{font-size:22px;font-weight:600;color:#33404f}
.card-text{min-width:0}
.lead{font-size:12px;color:#596372}
.name{font-size:16px;font-weight:650;color:#151a21;line-height:1.3}
.job{font-size:13px;color:#3f4a57}
.intro{font-size:13px;color:#4a5563;margin-top:4px;line-height:1.4}
.small{padding:10px 20px}.small .photo,.small .mono{width:44px;height:44px;font-size:16px}.small .intro{display:none}
.banner{padding:10px 20px;font-size:13px;line-height:1.4;background:#eef3f8;color:#1f2d3d;border-bottom:1px solid #e1e7ee}
.banner.warn{background:#fff6e0;color:#5c3d00;border-bottom-color:#f3e2b3}
.list{flex:1;min-height:0;overflow-y:auto;overscroll-behavior:contain;display:flex;flex-direction:column;padding:12px 16px 8px}
.greet{padding:12px 8px 8px;text-align:center;font-size:14px;color:#2b3440}
.msg{display:flex;max-width:82%;margin-top:3px}
.msg.first{margin-top:14px}
.msg.me{align-self:flex-end}
.msg.agent{align-self:flex-start;gap:8px}
.msg.sys{align-self:center;max-width:90%;margin:12px 0 2px}
.msg.sys p{font-size:12px;color:#596372;text-align:center}
.col{display:flex;flex-direction:column;min-width:0}
.me .col{align-items:flex-end}
.av{flex:none;width:32px;height:32px;border-radius:50%;object-fit:cover;background:#dde2e8;visibility:hidden;align-self:flex-start;margin-top:18px;font-size:12px;font-weight:600;color:#33404f}
.first .av{visibility:visible}
.who{font-size:12px;font-weight:600;color:#3f4a57;margin:0 4px 3px;display:none}
.first .who{display:block}
.bubble{padding:9px 13px;border-radius:16px;white-space:pre-wrap;overflow-wrap:anywhere;line-height:1.45}
.me .bubble{background:var(--a);color:var(--at);border-bottom-right-radius:6px}
.msg.agent .bubble{background:#eef0f3;color:#151a21;border-bottom-left-radius:6px}
.pending .bubble{opacity:.7}
.meta{font-size:11.5px;color:#596372;margin:3px 4px 0}
.typing{padding:2px 20px 8px 56px;font-size:12.5px;color:#596372;font-style:italic}
.email,.end{padding:12px 16px 14px;border-top:1px solid #e7eaee;background:#f7f8fa}
.email label,.rate label,.rate legend{display:block;font-size:12.5px;font-weight:600;color:#2b3440;margin-bottom:6px}
.row{display:flex;gap:8px}
.root input,.root textarea{display:block;background:#fff;color:#1c2128;border:1px solid #b9c0ca;border-radius:10px;font-size:14px;line-height:20px}
.root input{flex:1;min-width:0;height:40px;padding:0 12px}
.btn{display:inline-flex;height:40px;padding:0 16px;border-radius:10px;background:var(--a);color:var(--at);font-weight:600;white-space:nowrap}
.btn.ghost{background:#fff;color:#1c2128;border:1px solid #b9c0ca;width:100%;margin-top:10px}
.note{font-size:12.5px;color:#3f4a57;margin-top:6px}
.note:empty{display:none}
.endtext{font-size:13.5px;color:#2b3440;margin-bottom:10px}
.rate textarea{width:100%;padding:8px 12px;resize:none;margin-bottom:8px}
.stars{display:flex;gap:6px;margin-bottom:10px}
.star{width:44px;height:40px;border-radius:10px;border:1px solid #b9c0ca;background:#fff;font-weight:600;text-align:center}
.star[aria-pressed="true"]{background:var(--a);color:var(--at);border-color:transparent}
.rated{font-size:13.5px;color:#1f5130;font-weight:600}
.composer{display:flex;align-items:flex-end;gap:8px;padding:10px 12px 12px;border-top:1px solid #e7eaee;background:#fff}
.composer textarea{flex:1;min-width:0;min-height:42px;max-height:128px;padding:10px 14px;resize:none;overflow-y:auto}
.root textarea:focus,.root input:focus{outline:none;border-color:var(--a);box-shadow:0 0 0 3px color-mix(in srgb,var(--a) 22%,transparent)}
.send{flex:none;width:42px;height:42px;border-radius:50%;background:var(--a);color:var(--at)}
@media (max-width:480px){.panel{inset:0;width:auto;height:auto;min-height:0;border-radius:0;border:0}.root.open .launcher{display:none}}
@media (prefers-reduced-motion:no-preference){.panel{animation:np-in .18s ease-out}@keyframes np-in{from{opacity:0;transform:translateY(8px)}}}`;
  // Inline and !important: no rule of the host page can hide, move, shrink or transform the element.
  const HOST_STYLE = "all:initial!important;display:block!important;position:fixed!important;z-index:2147483000!important;" +
    "bottom:20px!important;" + (LEFT ? "left" : "right") + ":20px!important";

  const put = (node, text) => { node.textContent = text || ""; node.hidden = !text; };
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = String(text);
    return node;
  };
  const initials = (name) => (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0]).join("").toUpperCase();
  const photoUrl = (url) => {
    if (!url) return null;
    try {
      const u = new URL(url, ORIGIN); // relative to the server, not to the host page
      return /^https?:$/.test(u.protocol) ? u.href : null;
    } catch (_) { return null; }
  };
  function avatar(a) {
    const src = photoUrl(a.photo_url);
    const fallback = () => el("span", "av", initials(a.name));
    if (!src) return fallback();
    const img = el("img", "av");
    img.alt = "";
    img.addEventListener("error", () => img.replaceWith(fallback()), { once: true });
    img.src = src;
    return img;
  }
  function accentColours(value) {
    try {
      if (!value || !(W.CSS && W.CSS.supports("color", value))) return null;
      const ctx = document.createElement("canvas").getContext("2d");
      ctx.fillStyle = value;
      const m = /^#(..)(..)(..)$/.exec(ctx.fillStyle);
      if (!m) return [value, "#fff"];
      const lum = m.slice(1).map((h) => {
        const c = parseInt(h, 16) / 255;
        return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
      });
      const l = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
      return [ctx.fillStyle, (1.05 / (l + 0.05)) >= 4.5 ? "#fff" : "#111"]; // white text only when it reads well
    } catch (_) { return null; }
  }

  function mount() {
    if (host) return;
    if (!customElements.get(TAG)) {
      customElements.define(TAG, class extends HTMLElement {
        constructor() { super(); this.attachShadow({ mode: "open" }); }
      });
    }
    host = document.createElement(TAG);
    host.setAttribute("style", HOST_STYLE); // inline !important: the host page's rules cannot hide or move it
    root = host.shadowRoot || host.attachShadow({ mode: "open" });
    root.innerHTML = "<style>" + STYLE + "</style>" + HTML;
    const q = (sel) => root.querySelector(sel);
    for (const name of ("root launcher badge panel title sub x card photo mono lead name job intro banner list greet " +
      "typing email ask note end endtext rate stars more rsend rated new composer live").split(" ")) $[name] = q("." + name);
    $.input = q("#np-input");
    $.emailInput = q("#np-email");
    $.comment = q("#np-comment");
    const colours = accentColours(script.dataset.accent);
    if (colours) { $.root.style.setProperty("--a", colours[0]); $.root.style.setProperty("--at", colours[1]); }
    $.title.textContent = TITLE;
    $.greet.textContent = GREETING;
    $.input.setAttribute("aria-describedby", "np-hint");
    for (let n = 1; n <= 5; n++) {
      const star = el("button", "star", n);
      star.type = "button";
      star.setAttribute("aria-pressed", "false");
      star.setAttribute("aria-label", n + " out of 5");
      star.addEventListener("click", () => {
        score = n;
        for (const s of $.stars.children) s.setAttribute("aria-pressed", String(+s.textContent === n));
        $.more.hidden = false;
      });
      $.stars.append(star);
    }
    $.launcher.addEventListener("click", () => ($.panel.hidden ? open(true) : close()));
    $.x.addEventListener("click", () => close());
    $.list.addEventListener("scroll", () => { stuck = nearBottom(); });
    if (W.ResizeObserver) new ResizeObserver(() => stuck && scrollDown()).observe($.list); // forms come and go
    $.panel.addEventListener("keydown", (e) => { if (e.key === "Escape") { e.stopPropagation(); close(); } });
    $.composer.addEventListener("submit", (e) => { e.preventDefault(); submit(); });
    $.input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); }
    });
    $.input.addEventListener("input", () => { autosize(); typing(); });
    $.email.addEventListener("submit", (e) => { e.preventDefault(); saveEmail(); });
    $.rsend.addEventListener("click", () => {
      if (score && send({ type: "rate", score, comment: $.comment.value.trim().slice(0, 2000), conversation_id: conv })) {
        $.more.hidden = true;
      }
    });
    $.new.addEventListener("click", () => { resetView(null); S.rated = null; save(); render(); $.input.focus(); });
    document.documentElement.appendChild(host); // outside <body>: survives frameworks that swap the body
    document.addEventListener("visibilitychange", () => {
      markSeen();
      if (retryTimer && document.visibilityState === "visible") reconnect(); // back to the tab: retry now
    });
    watchNavigation();
    for (const item of S.outbox) if (!byClient.has(item.client_id)) pendingMessage(item);
    if (wantOpen || S.open) open(wantOpen);
  }

  // -- messages
  function addMessage(m) {
    const a = m.author || {};
    const kind = a.kind === "agent" ? "agent" : a.kind === "system" ? "sys" : "me";
    const node = el("div", "msg " + kind);
    const rec = { seq: m.seq || 0, cid: m.client_id || null, kind, at: m.sent_at, node,
      who: kind === "me" ? kind : kind + ":" + (a.id || a.name) };
    node._np = rec;
    if (kind === "sys") {
      node.append(el("p", "", m.body));
    } else {
      const col = el("div", "col");
      if (kind === "agent") { node.append(avatar(a)); col.append(el("div", "who", a.name || "")); }
      rec.bubble = el("div", "bubble", m.body);
      rec.meta = el("div", "meta");
      col.append(rec.bubble, rec.meta);
      node.append(col);
    }
    if (rec.seq) bySeq.set(rec.seq, rec); else node.classList.add("pending");
    if (rec.cid) byClient.set(rec.cid, rec);
    place(rec);
    paint(rec);
    return rec;
  }
  const pendingMessage = (item) => addMessage({ client_id: item.client_id, body: item.body, sent_at: item.at, author: {} });
  // Stored messages in seq order; messages still on their way stay at the end.
  function place(rec) {
    let before = null;
    if (rec.seq) {
      for (const node of $.list.children) {
        const r = node._np;
        if (r && r !== rec && (!r.seq || r.seq > rec.seq)) { before = node; break; }
      }
    }
    if (rec.node.nextSibling !== before || rec.node.parentNode !== $.list) $.list.insertBefore(rec.node, before);
    let prev = null;
    for (const node of $.list.children) {
      if (!node._np) continue;
      node.classList.toggle("first", !prev || prev.who !== node._np.who || node._np.kind === "sys");
      prev = node._np;
    }
    if (stuck) scrollDown();
  }
  let stuck = true; // the list follows new messages unless the visitor scrolled up to read
  const nearBottom = () => $.list.scrollHeight - $.list.scrollTop - $.list.clientHeight < 80;
  const scrollDown = () => { $.list.scrollTop = $.list.scrollHeight; };
  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
  function when(iso) {
    const d = iso ? new Date(iso) : new Date();
    if (isNaN(d)) return "";
    const today = d.toDateString() === new Date().toDateString();
    return (today ? "" : d.toLocaleDateString(undefined, { month: "short", day: "numeric" }) + ", ") + timeFormat.format(d);
  }
  function paint(rec) {
    if (!rec.meta) return;
    let text = when(rec.at);
    if (rec.kind === "me") {
      const state = !rec.seq ? (ready ? "Sending…" : "Not sent yet — waiting for the connection")
        : rec.seq <= agentReadSeq ? "Read" : "Sent";
      rec.node.dataset.state = !rec.seq ? "pending" : state.toLowerCase();
      text += " · " + state;
    }
    rec.meta.textContent = text;
  }
  function confirm(rec, seq, at) {
    if (rec.seq) return;
    rec.seq = seq;
    if (at) rec.at = at;
    bySeq.set(seq, rec);
    rec.node.classList.remove("pending");
    place(rec);
    paint(rec);
  }
  const dropOutbox = (cid) => { S.outbox = S.outbox.filter((item) => item.client_id !== cid); save(); };
  function markSeen() {
    if (!host) return;
    if (!$.panel.hidden && document.visibilityState === "visible" && lastSeq > S.seen_seq) {
      S.seen_seq = lastSeq;
      save();
    }
    if (ready && conv && !$.panel.hidden && document.visibilityState === "visible" && lastSeq > readSent) {
      readSent = lastSeq;
      send({ type: "read", seq: lastSeq });
    }
    const n = $.panel.hidden ? [...bySeq.values()].filter((r) => r.kind === "agent" && r.seq > S.seen_seq).length : 0;
    $.badge.hidden = !n;
    $.badge.textContent = n > 9 ? "9+" : String(n);
    $.launcher.setAttribute("aria-label", $.panel.hidden ? "Open chat" + (n ? ", " + n + " unread" : "") : "Close chat");
  }
  function announce(text) {
    if (!host) return;
    $.live.textContent = "";
    setTimeout(() => { $.live.textContent = text; }, 60); // a fresh node change, so the same words are read again
  }

  // Forget what is on screen (a different conversation begins); messages still on their way stay.
  function resetView(id) {
    for (const rec of bySeq.values()) rec.node.remove();
    bySeq.clear();
    for (const [cid, rec] of byClient) if (rec.seq) byClient.delete(cid);
    conv = id;
    lastSeq = readSent = agentReadSeq = 0;
    status = id ? "queued" : null;
    agent = queue = null;
    S.conversation_id = id;
    S.last_seq = S.seen_seq = 0;
    save();
  }

  // -- rendering of the state
  const people = (n) => n + (n === 1 ? " person" : " people");
  function waitText(s) {
    if (s == null) return "";
    if (s <= 30) return "someone will be with you in a moment";
    const m = Math.round(s / 60);
    if (m < 90) return "about " + Math.max(1, m) + (m <= 1 ? " minute" : " minutes");
    return "about " + Math.round(m / 60) + " hours";
  }
  const queueText = (q) => (q.position === 1 ? "You are next in line" : "You are number " + q.position + " in line") +
    (q.expected_wait_s != null ? " — " + waitText(q.expected_wait_s) : "");
  const OFFLINE = "No one is online right now. Leave your message and your email address, and we'll answer by email.";
  function render() {
    if (!host) return;
    const nobody = agentsOnline === 0 && status !== "active" && status !== "closed";
    const saved = S.email_saved && S.email_saved.conv === conv && conv;
    let banner = "";
    let warnCls = false;
    if (lost) { banner = "Reconnecting… Your messages are kept and will be sent when we're back."; warnCls = true; }
    else if (nobody) { banner = saved ? "No one is online right now. We'll answer by email as soon as someone is back." : OFFLINE; warnCls = true; }
    else if (status === "queued") banner = queue ? queueText(queue) : "Waiting for the next available person…";
    $.banner.hidden = !banner;
    $.banner.textContent = banner;
    $.banner.classList.toggle("warn", warnCls);
    $.sub.textContent = lost ? "Connection lost" : agent && status === "active" ? (agent.given_name || agent.name) + " is here to help"
      : agentsOnline ? people(agentsOnline) + " online now" : agentsOnline === 0 ? "No one online right now" : "";
    // The person: photo, full name, title and intro, from the moment they join.
    $.card.hidden = !agent;
    if (agent) {
      const src = photoUrl(agent.photo_url);
      $.photo.hidden = !src;
      if (src && $.photo.getAttribute("src") !== src) $.photo.src = src;
      $.photo.alt = "Photo of " + agent.name;
      put($.mono, src ? "" : initials(agent.name));
      $.lead.textContent = status === "closed" ? "You chatted with" : "You're chatting with";
      $.card.classList.toggle("small", status === "closed");
      $.name.textContent = agent.name;
      put($.job, agent.title);
      put($.intro, agent.intro);
    }
    // No one online: ask where the answer should go.
    $.email.hidden = !(nobody || (saved && status !== "active" && status !== "closed"));
    $.ask.hidden = !!saved;
    $.note.textContent = saved ? "Thanks — we'll reply to " + S.email_saved.email + "."
      : S.pending_email ? "We'll save " + S.pending_email + " as soon as you send your message." : "";
    // Closed: say so, ask for a rating, offer a new start; the old conversation is never written into again.
    const closed = status === "closed";
    $.end.hidden = !closed;
    $.composer.hidden = closed;
    if (closed) {
      $.endtext.textContent = "This conversation has ended. Thank you for chatting with us.";
      $.rate.hidden = S.rated === conv;
      put($.rated, S.rated === conv && "Thank you for your rating.");
    }
    for (const rec of byClient.values()) if (!rec.seq) paint(rec);
    markSeen();
  }

  // -- opening and closing
  function open(focus) {
    if (!host) return;
    $.panel.hidden = false;
    $.root.classList.add("open");
    $.launcher.setAttribute("aria-expanded", "true");
    S.open = true;
    save();
    scrollDown();
    markSeen();
    if (focus) ($.composer.hidden ? ($.rate.hidden ? $.new : $.stars.firstChild) : $.input).focus();
  }
  function close() {
    if (!host || $.panel.hidden) return;
    const inside = !!root.activeElement;
    $.panel.hidden = true;
    $.root.classList.remove("open");
    $.launcher.setAttribute("aria-expanded", "false");
    S.open = false;
    save();
    markSeen();
    if (inside) $.launcher.focus();
  }
  const autosize = () => {
    $.input.style.height = "auto";
    $.input.style.height = Math.min($.input.scrollHeight + 2, 128) + "px";
  };

  // -- sending
  function send(frame) {
    if (!ws || ws.readyState !== 1) return false;
    try { ws.send(JSON.stringify(frame)); return true; } catch (_) { return false; }
  }
  const newId = () => (W.crypto && crypto.randomUUID ? crypto.randomUUID()
    : Date.now().toString(36) + Math.random().toString(36).slice(2));
  function submit() {
    const body = $.input.value.trim().slice(0, MAX_CHARS);
    if (!body || status === "closed") return;
    const item = { client_id: newId(), body, at: new Date().toISOString() };
    S.outbox.push(item); // kept until acknowledged, across reloads and reconnects
    save();
    $.input.value = "";
    autosize();
    stopTyping();
    pendingMessage(item);
    scrollDown();
    if (ready) send({ type: "message", client_id: item.client_id, body: item.body });
  }
  // Everything not yet acknowledged, with its original client_id: the server stores each client_id once.
  function flush() {
    for (const item of S.outbox) {
      const rec = byClient.get(item.client_id);
      if (rec && rec.seq) { dropOutbox(item.client_id); continue; }
      send({ type: "message", client_id: item.client_id, body: item.body });
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
    const email = $.emailInput.value.trim();
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email) || email.length > 254) {
      $.note.textContent = "Please enter an email address like name@example.com.";
      $.emailInput.setAttribute("aria-invalid", "true");
      $.emailInput.focus();
      return;
    }
    $.emailInput.removeAttribute("aria-invalid");
    S.pending_email = email; // the server needs a conversation first: sent with (or after) the first message
    save();
    if (ready) emailDue();
    render();
  }
  function identify(who) {
    if (!who || typeof who !== "object") return;
    const pick = {};
    for (const k of ["user_id", "user_hash", "name", "email", "attributes"]) if (who[k] != null) pick[k] = who[k];
    if (JSON.stringify(pick) === JSON.stringify(S.identify || null)) return;
    S.identify = pick;
    save();
    if (ws) { // say hello again, quietly, so the server learns who this is now
      const old = ws;
      ws = null;
      ready = false;
      old.onclose = null;
      try { old.close(1000, "identify"); } catch (_) { /* already closed */ }
      reconnect();
    }
  }
  function reportPage() {
    const url = location.href;
    if (!ready || url === lastPage) return;
    lastPage = url;
    send({ type: "page", url: url.slice(0, 2000), title: String(document.title || "").slice(0, 300) });
  }
  // Single-page apps change the title after the URL: report a moment later.
  const navigated = () => setTimeout(reportPage, 300);
  function watchNavigation() {
    W.addEventListener("popstate", navigated);
    W.addEventListener("hashchange", navigated);
    for (const name of ["pushState", "replaceState"]) {
      const original = history[name];
      if (typeof original !== "function" || original.__nameplate) continue;
      const wrapped = function () {
        const result = original.apply(this, arguments);
        try { navigated(); } catch (_) { /* never the host's problem */ }
        return result;
      };
      wrapped.__nameplate = true;
      try { history[name] = wrapped; } catch (_) { /* frozen history */ }
    }
  }

  // -- the connection
  async function getToken() {
    const response = await fetch(ORIGIN + "/api/v1/visitors", {
      method: "POST", mode: "cors", credentials: "omit",
      headers: { "Content-Type": "text/plain" }, // JSON as text/plain: a simple request, no preflight
      body: JSON.stringify({ site: SITE }),
    });
    const data = response.ok ? await response.json() : null;
    if (!data || typeof data.token !== "string") {
      // 4xx (unknown site, origin not allowed) will not get better by retrying; 5xx and 429 may.
      throw Object.assign(new Error("token request: HTTP " + response.status), {
        permanent: response.status >= 400 && response.status < 500 && response.status !== 429 });
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
      const hello = { type: "hello", site: SITE, token: S.token, conversation_id: conv, resume_after: conv ? lastSeq : 0,
        locale: navigator.language || null, timezone: null };
      try { hello.timezone = Intl.DateTimeFormat().resolvedOptions().timeZone || null; } catch (_) { /* old engine */ }
      if (S.identify) hello.identify = S.identify;
      send(hello);
      send({ type: "ping" }); // its pong comes after the whole replay: then the outbox goes out
    };
    sock.onmessage = (event) => {
      if (ws !== sock) return;
      lastFrameAt = Date.now();
      let frame;
      try { frame = JSON.parse(event.data); } catch (_) { return; }
      try { onFrame(frame); } catch (error) { warn("could not handle a " + frame.type + " frame: " + error); }
    };
    sock.onerror = () => { /* onclose follows and decides */ };
    sock.onclose = (event) => { if (ws === sock) closed(event.code); };
  }
  function closed(code) {
    ws = null;
    ready = false;
    clearInterval(heartbeat);
    if (code === CLOSE_UNAUTHORIZED) {
      if (lastError === "bad_token" && tokenRetries++ < 2) { S.token = null; save(); reconnect(); return; }
      fail("the server refused the chat on this page (" + (lastError || code) + ")", true);
      return;
    }
    if (!everWelcomed) { fail("the chat server is unreachable", true); return; }
    lost = true;
    render();
    announce("Connection lost. Reconnecting…");
    schedule();
  }
  function fail(reason, permanent) {
    ws = null;
    ready = false;
    if (!everWelcomed || permanent) {
      dead = true;
      warn(reason);
      if (host) { render(); $.banner.hidden = false; $.banner.textContent = "The chat is unavailable right now. Please try again later."; }
      return;
    }
    lost = true;
    render();
    schedule();
  }
  // Exponential back-off with jitter, so a restarted server is not hit by every visitor at once.
  function schedule() {
    if (dead || retryTimer) return;
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempts++);
    retryTimer = setTimeout(reconnect, ceiling / 2 + Math.random() * ceiling / 2);
  }
  W.addEventListener("online", () => { if (retryTimer) reconnect(); });

  function onFrame(f) {
    const mine = !f.conversation_id || f.conversation_id === conv;
    switch (f.type) {
      case "welcome": return welcome(f);
      case "pong":
        if (!ready && ws) {
          ready = true;
          flush();
          reportPage();
          render();
        }
        return;
      case "message": return message(f);
      case "ack": {
        // Normally conversation_started came first; this covers a new conversation announced late.
        if (f.conversation_id && f.conversation_id !== conv && (!conv || status === "closed")) resetView(f.conversation_id);
        const rec = byClient.get(f.client_id);
        if (rec && (!f.conversation_id || f.conversation_id === conv)) confirm(rec, f.seq);
        dropOutbox(f.client_id);
        emailDue();
        return render();
      }
      case "conversation_started":
        if (f.conversation_id !== conv) { resetView(f.conversation_id); render(); }
        return;
      case "queue":
        if (!mine) return;
        if (f.agents_online != null) agentsOnline = f.agents_online;
        if (status !== "active" && (!queue || queue.position !== f.position)) announce(queueText(f));
        queue = f;
        if (status !== "closed") status = "queued";
        return render();
      case "agent_joined":
        if (!mine) return;
        status = "active";
        agent = f.agent || null;
        queue = null;
        if (agent) announce("You're chatting with " + agent.name + (agent.title ? ", " + agent.title : ""));
        return render();
      case "agent_left":
        if (!mine) return;
        announce((f.agent && f.agent.name ? f.agent.name : "Your agent") + " had to leave. You are back in line for the next person.");
        status = "queued";
        agent = null;
        return render();
      case "transferred":
        if (!mine) return;
        announce((f.from || "Your agent") + " is handing you over to " + (f.to_agent || f.to_team || "a colleague") + ".");
        if (f.to_team) { status = "queued"; agent = null; }
        return render();
      case "typing":
        if (!mine || f.by !== "agent") return;
        clearTimeout(agentTypingTimer);
        $.typing.hidden = !f.on || status === "closed";
        $.typing.textContent = (f.name || (agent && agent.given_name) || "Your agent") + " is typing…";
        if (f.on) agentTypingTimer = setTimeout(() => { $.typing.hidden = true; }, TYPING_SHOWN_MS);
        return;
      case "read":
        if (!mine || f.by !== "agent") return;
        agentReadSeq = Math.max(agentReadSeq, f.seq || 0);
        for (const rec of bySeq.values()) if (rec.kind === "me") paint(rec);
        return;
      case "closed":
        if (!mine) return;
        status = "closed";
        $.typing.hidden = true;
        score = 0;
        announce("The conversation has ended.");
        return render();
      case "email_saved":
        S.email_saved = { conv, email: f.email };
        S.pending_email = null;
        save();
        return render();
      case "rated":
        S.rated = f.conversation_id;
        save();
        announce("Thank you for your rating.");
        return render();
      case "error":
        lastError = f.code;
        if (f.code === "rate_limited" && ready) setTimeout(flush, 2000); // the unacknowledged ones, again
        return;
      default:
    }
  }
  function welcome(f) {
    everWelcomed = true;
    lost = false;
    if (typeof f.token === "string") { S.token = f.token; save(); } // identify may make us another customer
    attempts = tokenRetries = 0;
    agentsOnline = typeof f.agents_online === "number" ? f.agents_online : null;
    const c = f.conversation;
    if (!c ? conv : c.id !== conv) resetView(c ? c.id : null);
    mount();
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
      if (Date.now() - lastFrameAt > PING_EVERY_MS + PONG_WAIT_MS) { // silent: drop it and start again
        sock.onclose = null;
        try { sock.close(); } catch (_) { /* gone */ }
        return closed(1006);
      }
      send({ type: "ping" });
    }, PING_EVERY_MS);
    render();
  }
  function message(f) {
    if (f.private || f.conversation_id !== conv || !conv || bySeq.has(f.seq)) return;
    lastSeq = Math.max(lastSeq, f.seq);
    S.last_seq = lastSeq;
    const rec = f.client_id && byClient.get(f.client_id);
    if (rec) { confirm(rec, f.seq, f.sent_at); dropOutbox(f.client_id); }
    else {
      addMessage(f);
      if (f.author && f.author.kind === "agent") {
        $.typing.hidden = true;
        if (f.seq > S.seen_seq) announce(f.author.name + ": " + f.body);
      }
    }
    save();
    markSeen();
  }

  for (const call of early) {
    try { if (Array.isArray(call) && typeof api[call[0]] === "function") api[call[0]](...call.slice(1)); } catch (_) { /* ignore */ }
  }
  reconnect();
})();
